/**
 * isInitialUidMap: whether /proc/self/uid_map is the initial user namespace's, which decides
 * what an EPERM from the proc connector means (a missing capability, or a child user namespace).
 * The texts are as the kernel prints them (kernel/user_namespace.c uid_m_show: "%10u %10u %10u").
 */
import { isInitialUidMap } from '../../src/netlink/errors';

test.each([
  ['the initial namespace, as printed', '         0          0 4294967295\n', true],
  ['the same without padding', '0 0 4294967295', true],
  [
    'unshare --user --map-root-user (root mapped to root, one id)',
    '         0          0          1\n',
    false,
  ],
  [
    'a rootless container',
    '         0       1000          1\n         1     100000      65536\n',
    false,
  ],
  ['a userns-remapped Docker', '         0     165536      65536\n', false],
  ['the whole range shifted', '         0          1 4294967295\n', false],
  ['nothing mapped yet', '', false],
  ['a fourth field', '0 0 4294967295 0', false],
])('%s', (_name, text, initial) => {
  expect(isInitialUidMap(text)).toBe(initial);
});
