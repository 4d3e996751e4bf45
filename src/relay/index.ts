/** src/relay: the registrants, the patch's file rules and the RT-signal delivery. */
export * from './patchRules';
export * from './registry';
export * from './relay';
export * from './attributes';
