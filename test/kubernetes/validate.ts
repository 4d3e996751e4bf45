/**
 * Offline validation of a Kubernetes manifest against the API schema that the kubernetes-models
 * package ships (generated from Kubernetes' OpenAPI document), in two passes:
 *   1. its JSON-schema validator (`new DaemonSet(obj).validate()`, ajv): types, enums, required
 *      fields, formats;
 *   2. its TypeScript declarations, with the manifest as an object literal assigned to the
 *      model's interface: TypeScript's excess-property check rejects any field the API does not
 *      have (`hostPid` for `hostPID`), which the JSON schema does not, because it leaves
 *      additionalProperties open. The API server rejects those too (strict field validation).
 */
import path from 'node:path';
import ts from 'typescript';

const ROOT = path.resolve(__dirname, '..', '..');

/** Kinds this validator knows: the kubernetes-models module and interface for each. */
const MODELS: Record<string, { module: string; iface: string; load: () => ModelClass }> = {
  'apps/v1 DaemonSet': {
    module: 'kubernetes-models/apps/v1/DaemonSet',
    iface: 'IDaemonSet',
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    load: () => require('kubernetes-models/apps/v1/DaemonSet').DaemonSet as ModelClass,
  },
};

type ModelClass = new (data: unknown) => { validate(): void };

/** Every problem found, as one line each; empty when the manifest is valid. */
export function validateManifest(manifest: unknown): string[] {
  if (typeof manifest !== 'object' || manifest === null || Array.isArray(manifest)) {
    return ['the manifest is not an object'];
  }
  const { apiVersion, kind } = manifest as { apiVersion?: unknown; kind?: unknown };
  const model = MODELS[`${String(apiVersion)} ${String(kind)}`];
  if (!model) return [`no schema here for apiVersion ${String(apiVersion)}, kind ${String(kind)}`];

  const problems: string[] = [];
  const Model = model.load();
  try {
    new Model(manifest).validate();
  } catch (err) {
    problems.push(`schema: ${err instanceof Error ? err.message : String(err)}`);
  }
  problems.push(...unknownFields(manifest, model.module, model.iface));
  return problems;
}

/** Pass 2: the manifest as a literal of the model's interface, type-checked in memory. */
function unknownFields(manifest: object, module: string, iface: string): string[] {
  const file = path.join(ROOT, '__kubernetes_manifest_check__.ts');
  const source =
    `import type { ${iface} } from '${module}';\n` +
    `export const manifest: ${iface} = ${JSON.stringify(manifest, null, 2)};\n`;
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    types: [],
    lib: ['lib.es5.d.ts'],
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.CommonJS,
    moduleResolution: ts.ModuleResolutionKind.Node10,
  };
  const host = ts.createCompilerHost(options);
  const { getSourceFile, fileExists, readFile } = host;
  host.getSourceFile = (name, language, ...rest) =>
    name === file
      ? ts.createSourceFile(name, source, language)
      : getSourceFile.call(host, name, language, ...rest);
  host.fileExists = (name) => name === file || fileExists.call(host, name);
  host.readFile = (name) => (name === file ? source : readFile.call(host, name));
  const program = ts.createProgram([file], options, host);
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const text = ts.flattenDiagnosticMessageText(d.messageText, ' ');
    if (d.file && d.start !== undefined) {
      const { line } = d.file.getLineAndCharacterOfPosition(d.start);
      const at = d.file.fileName === file ? `manifest line ${line}` : d.file.fileName;
      return `fields: ${at}: ${text}`;
    }
    return `fields: ${text}`;
  });
}
