/*
 * A benchmark registrant: blocks SIGNAL (and SIGTERM) before anything else, registers itself by
 * writing its pid into PROCESSES when given, prints "ready", then takes every SIGNAL with
 * sigwaitinfo and records (si_value.sival_int, si_pid, CLOCK_MONOTONIC ns) in memory. On SIGTERM
 * it writes the records to OUTFILE as "child si_pid t_ns" lines and exits 0.
 *
 *   latency_consumer SIGNAL OUTFILE [PROCESSES]
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct rec {
  int child;
  int pid;
  long long t;
};

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  int sig = atoi(argv[1]);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  sigaddset(&set, SIGTERM);
  sigprocmask(SIG_BLOCK, &set, NULL);
  if (argc > 3) {
    char text[32];
    int len = snprintf(text, sizeof text, "%d", (int)getpid());
    int fd = open(argv[3], O_WRONLY);
    if (fd < 0 || write(fd, text, (size_t)len) != len) return 3;
    close(fd);
  }
  size_t cap = 1 << 20, n = 0;
  struct rec *recs = malloc(cap * sizeof *recs);
  printf("ready\n");
  fflush(stdout);
  for (;;) {
    siginfo_t si;
    int got = sigwaitinfo(&set, &si);
    if (got == SIGTERM) break;
    if (got != sig) continue;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (n == cap) recs = realloc(recs, (cap *= 2) * sizeof *recs);
    recs[n].child = si.si_value.sival_int;
    recs[n].pid = si.si_pid;
    recs[n].t = ts.tv_sec * 1000000000LL + ts.tv_nsec;
    n++;
  }
  FILE *out = fopen(argv[2], "w");
  if (!out) return 4;
  for (size_t i = 0; i < n; i++) fprintf(out, "%d %d %lld\n", recs[i].child, recs[i].pid, recs[i].t);
  fclose(out);
  return 0;
}
