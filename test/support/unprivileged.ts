/**
 * Running a test child as an unprivileged user wherever the checkout is, under /root (mode 0700)
 * included: the child runs as nobody but keeps one capability, CAP_DAC_READ_SEARCH (ambient, so
 * it survives the exec of node), to read the checkout's files, and nothing else: it is not root
 * (euid 65534, no CAP_SYS_ADMIN), which is what the "not root" tests are about.
 */
export const AS_NOBODY: readonly string[] = [
  'setpriv',
  '--reuid=nobody',
  '--regid=nogroup',
  '--clear-groups',
  '--inh-caps=+dac_read_search',
  '--ambient-caps=+dac_read_search',
  '--',
];
