/**
 * deploy/kubernetes/daemonset.yaml against the Kubernetes API schema (kubernetes-models, offline;
 * see ./validate.ts), and against what relayfork needs on a node. No cluster runs here: this
 * proves the manifest is one the API accepts and says what README "On a fleet" promises, not that
 * a kubelet runs it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { validateManifest } from './validate';

const MANIFEST = path.resolve(__dirname, '..', '..', 'deploy', 'kubernetes', 'daemonset.yaml');

interface Container {
  name: string;
  image: string;
  args?: string[];
  securityContext?: { privileged?: boolean };
  volumeMounts?: Array<{ name: string; mountPath: string; mountPropagation?: string }>;
  livenessProbe?: { exec?: { command: string[] } };
  startupProbe?: { exec?: { command: string[] } };
}
interface DaemonSet {
  apiVersion: string;
  kind: string;
  spec: {
    template: {
      spec: {
        hostPID?: boolean;
        hostNetwork?: boolean;
        automountServiceAccountToken?: boolean;
        terminationGracePeriodSeconds?: number;
        containers: Container[];
        volumes?: Array<{ name: string; hostPath?: { path: string; type?: string } }>;
      };
    };
  };
}

function load(): DaemonSet {
  const docs = parseAllDocuments(fs.readFileSync(MANIFEST, 'utf8'));
  if (!Array.isArray(docs)) throw new Error('no YAML document');
  expect(docs).toHaveLength(1);
  expect(docs[0].errors).toEqual([]);
  expect(docs[0].warnings).toEqual([]);
  return docs[0].toJS() as DaemonSet;
}

/** A deep copy to break. */
function copy(ds: DaemonSet): DaemonSet {
  return JSON.parse(JSON.stringify(ds)) as DaemonSet;
}

test('the manifest is a valid apps/v1 DaemonSet: schema and field names', () => {
  expect(validateManifest(load())).toEqual([]);
});

test('it gives the daemon what it needs on a node', () => {
  const pod = load().spec.template.spec;
  expect(pod.hostPID).toBe(true);
  expect(pod.hostNetwork).toBe(true);
  expect(pod.automountServiceAccountToken).toBe(false);
  expect(pod.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(15);
  expect(pod.containers).toHaveLength(1);
  const [c] = pod.containers;
  // The image docker/build.sh tags from docker/Dockerfile.
  expect(c.image).toBe('relayfork:latest');
  expect(fs.readFileSync(path.resolve(__dirname, '../../docker/build.sh'), 'utf8')).toContain(
    'IMAGE=${RELAYFORK_IMAGE:-relayfork:latest}',
  );
  expect(c.args).toEqual(['--signal', '40']);
  expect(c.securityContext?.privileged).toBe(true);

  const volume = (mountPath: string) => {
    const mount = c.volumeMounts?.find((m) => m.mountPath === mountPath);
    return { mount, source: pod.volumes?.find((v) => v.name === mount?.name)?.hostPath };
  };
  const run = volume('/run');
  expect(run.mount?.mountPropagation).toBe('Bidirectional');
  expect(run.source).toEqual({ path: '/run', type: 'Directory' });
  const fuse = volume('/dev/fuse');
  expect(fuse.source).toEqual({ path: '/dev/fuse', type: 'CharDevice' });

  expect(c.livenessProbe?.exec?.command).toEqual(['cat', '/run/relayfork/signal']);
  expect(c.startupProbe?.exec?.command).toEqual(['cat', '/run/relayfork/signal']);
});

describe('the validation rejects a broken copy', () => {
  const cases: Array<[string, (ds: DaemonSet) => void, RegExp]> = [
    [
      'a misspelt field (hostPid)',
      (ds) => {
        const pod = ds.spec.template.spec as unknown as Record<string, unknown>;
        pod.hostPid = pod.hostPID;
        delete pod.hostPID;
      },
      /fields: .*'"hostPid"' does not exist in type 'IPodSpec'/,
    ],
    [
      'an unknown field deep inside (a volume mount)',
      (ds) => {
        const mount = ds.spec.template.spec.containers[0].volumeMounts?.[0] as unknown as Record<
          string,
          unknown
        >;
        mount.propagation = 'Bidirectional';
      },
      /fields: .*'"propagation"' does not exist in type 'IVolumeMount'/,
    ],
    [
      'a hostPath type the API does not have',
      (ds) => {
        const fuse = ds.spec.template.spec.volumes?.find((v) => v.hostPath?.path === '/dev/fuse');
        if (fuse?.hostPath) fuse.hostPath.type = 'Chardevice';
      },
      /schema: .*hostPath\/type must be equal to one of the allowed values/,
    ],
    [
      'a mount propagation the API does not have',
      (ds) => {
        const mounts = ds.spec.template.spec.containers[0].volumeMounts ?? [];
        for (const m of mounts) if (m.mountPropagation) m.mountPropagation = 'bidirectional';
      },
      /schema: .*mountPropagation must be equal to one of the allowed values/,
    ],
    [
      'privileged as a string',
      (ds) => {
        (
          ds.spec.template.spec.containers[0].securityContext as Record<string, unknown>
        ).privileged = 'true';
      },
      /schema: .*privileged must be boolean/,
    ],
    [
      'a container without its required name',
      (ds) => {
        delete (ds.spec.template.spec.containers[0] as Partial<Container>).name;
      },
      /schema: .*containers\/0 must have required property name/,
    ],
  ];
  test.each(cases)('%s', (_what, breakIt, problem) => {
    const broken = copy(load());
    breakIt(broken);
    const problems = validateManifest(broken);
    expect(problems).toEqual(expect.arrayContaining([expect.stringMatching(problem)]));
  });
});
