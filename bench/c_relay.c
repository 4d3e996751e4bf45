/*
 * The C reference relay for the benchmark (not part of relayfork): what relayfork's fast path
 * does, in the least code. Subscribes to the proc connector for fork events only (struct
 * proc_input with PROC_EVENT_FORK, Linux >= 6.6; the bare listen below it, filtering here),
 * then recv()s one datagram at a time and calls pidfd_send_signal for each registrant with the
 * patch's siginfo (SI_ASYNCIO, si_pid = parent, or the thread's tgid for a new thread,
 * si_value = child). Registrants are given as pids; SIGTERM/SIGINT ends it and prints
 * "sent N lost N failed N forks N overruns N catch_ups N".
 *
 * With CATCH_UP_NICE set in its environment it follows relayfork's catch-up priority
 * (src/netlink/catchUpPriority.ts) the same way: once in 16 receives, and on every call while
 * behind, it reads with recvmmsg (up to 32, MSG_WAITFORONE); a full batch raises the thread to
 * that nice value, a batch of one at most lowers it to its own. So the bench compares like with
 * like: the same policy, in the least code.
 *
 *   [CATCH_UP_NICE=n] c_relay SIGNAL PID...
 * Prints "ready" once subscribed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/cn_proc.h>
#include <linux/connector.h>
#include <linux/netlink.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef PIDFD_THREAD
#define PIDFD_THREAD 0200
#endif

#define SLOTS 32
#define PROBE_EVERY 16

static volatile sig_atomic_t stop;
static void on_stop(int sig) { (void)sig; stop = 1; }

static int listen_fork(int fd) {
  struct {
    struct nlmsghdr nl;
    struct cn_msg cn;
    unsigned int input[2]; /* struct proc_input: mcast_op, event_type (Linux >= 6.6) */
  } __attribute__((packed)) req;
  memset(&req, 0, sizeof req);
  req.nl.nlmsg_len = sizeof req;
  req.nl.nlmsg_type = NLMSG_DONE;
  req.cn.id.idx = CN_IDX_PROC;
  req.cn.id.val = CN_VAL_PROC;
  req.cn.len = sizeof req.input;
  req.input[0] = PROC_CN_MCAST_LISTEN;
  req.input[1] = PROC_EVENT_FORK;
  return send(fd, &req, sizeof req, 0) < 0 ? -1 : 0;
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  int sig = atoi(argv[1]);
  int n = argc - 2;
  int *pidfds = calloc((size_t)(n > 0 ? n : 1), sizeof(int));
  for (int i = 0; i < n; i++) {
    pidfds[i] = (int)syscall(SYS_pidfd_open, atoi(argv[i + 2]), PIDFD_THREAD);
    if (pidfds[i] < 0) {
      perror("pidfd_open");
      return 1;
    }
  }
  int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_CONNECTOR);
  int rcvbuf = 32 * 1024 * 1024;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf);
  struct sockaddr_nl addr = {.nl_family = AF_NETLINK, .nl_groups = CN_IDX_PROC};
  if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen_fork(fd) < 0) {
    perror("proc connector");
    return 1;
  }
  struct sigaction sa = {.sa_handler = on_stop};
  sigaction(SIGTERM, &sa, NULL); /* no SA_RESTART: recv returns EINTR */
  sigaction(SIGINT, &sa, NULL);
  printf("ready\n");
  fflush(stdout);
  siginfo_t info;
  memset(&info, 0, sizeof info);
  info.si_signo = sig;
  info.si_code = SI_ASYNCIO;
  unsigned long sent = 0, lost = 0, failed = 0, forks = 0, overruns = 0, catch_ups = 0;
  const char *catch_up = getenv("CATCH_UP_NICE");
  int own_nice = getpriority(PRIO_PROCESS, 0), raise_to = catch_up ? atoi(catch_up) : own_nice;
  int raised = 0, behind = 0, since_probe = 0;
  static char bufs[SLOTS][4096] __attribute__((aligned(8)));
  struct iovec iov[SLOTS];
  struct mmsghdr msgs[SLOTS];
  memset(msgs, 0, sizeof msgs);
  for (int i = 0; i < SLOTS; i++) {
    iov[i].iov_base = bufs[i];
    iov[i].iov_len = sizeof bufs[i];
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  while (!stop) {
    int got;
    if (raise_to < own_nice && (behind || ++since_probe >= PROBE_EVERY)) {
      since_probe = 0;
      got = recvmmsg(fd, msgs, SLOTS, MSG_WAITFORONE, NULL);
      behind = got > 1;
      if (got >= SLOTS && !raised && setpriority(PRIO_PROCESS, 0, raise_to) == 0) {
        raised = 1;
        catch_ups++;
      } else if (got >= 0 && got <= 1 && raised) {
        setpriority(PRIO_PROCESS, 0, own_nice);
        raised = 0;
      }
    } else {
      ssize_t len = recv(fd, bufs[0], sizeof bufs[0], 0);
      got = len < 0 ? -1 : 1;
      msgs[0].msg_len = (unsigned)len;
    }
    if (got < 0) {
      if (errno == ENOBUFS) overruns++;
      continue;
    }
    for (int m = 0; m < got; m++) {
      char *buf = bufs[m];
      ssize_t len = msgs[m].msg_len;
      struct nlmsghdr *nl = (struct nlmsghdr *)buf;
      struct cn_msg *cn = NLMSG_DATA(nl);
      struct proc_event *ev = (struct proc_event *)cn->data;
      /* nlmsghdr 16 + cn_msg 20 + proc_event header 16 + fork_proc_event 16 */
      if (len < 68 || nl->nlmsg_type != NLMSG_DONE ||
          cn->id.idx != CN_IDX_PROC || ev->what != PROC_EVENT_FORK)
        continue;
      forks++;
      int child = ev->event_data.fork.child_pid;
      int tgid = ev->event_data.fork.child_tgid;
      info.si_pid = child == tgid ? ev->event_data.fork.parent_pid : tgid;
      info.si_value.sival_int = child;
      for (int i = n - 1; i >= 0; i--) {
        if (syscall(SYS_pidfd_send_signal, pidfds[i], sig, &info, 0) == 0) sent++;
        else if (errno == EAGAIN) lost++;
        else failed++;
      }
    }
  }
  printf("sent %lu lost %lu failed %lu forks %lu overruns %lu catch_ups %lu\n", sent, lost, failed,
         forks, overruns, catch_ups);
  return 0;
}
