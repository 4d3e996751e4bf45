/*
 * The benchmark's load: forks or threads, each recorded as "child t_ns" (CLOCK_MONOTONIC just
 * before fork()/pthread_create()) in OUTFILE.
 *
 *   loadgen paced N RATE OUTFILE    N process forks at RATE per second (child _exit(0) at once)
 *   loadgen storm N OUTFILE         N process forks, one after the other, as fast as possible
 *   loadgen threads N OUTFILE       N thread creations, 4 at a time (create 4, join them)
 * Prints "pid <pid>" first (for threads, the si_pid their signals carry).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct rec {
  volatile int child;
  long long t;
};

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void *thread_main(void *arg) {
  ((struct rec *)arg)->child = gettid();
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 4) return 2;
  const char *mode = argv[1];
  long n = atol(argv[2]);
  double rate = strcmp(mode, "paced") == 0 ? atof(argv[3]) : 0;
  const char *outfile = argv[rate > 0 ? 4 : 3];
  struct rec *recs = calloc((size_t)n, sizeof *recs);
  printf("pid %d\n", (int)getpid());
  fflush(stdout);
  if (strcmp(mode, "threads") == 0) {
    for (long i = 0; i < n; i += 4) {
      pthread_t t[4];
      int k = 0;
      for (; k < 4 && i + k < n; k++) {
        recs[i + k].t = now_ns();
        if (pthread_create(&t[k], NULL, thread_main, &recs[i + k]) != 0) return 1;
      }
      for (int j = 0; j < k; j++) pthread_join(t[j], NULL);
    }
  } else {
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    for (long i = 0; i < n; i++) {
      if (rate > 0) {
        long long step = (long long)(1e9 / rate);
        next.tv_nsec += step;
        while (next.tv_nsec >= 1000000000L) {
          next.tv_nsec -= 1000000000L;
          next.tv_sec++;
        }
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
      }
      recs[i].t = now_ns();
      pid_t c = fork();
      if (c == 0) _exit(0);
      if (c < 0) return 1;
      recs[i].child = c;
      waitpid(c, NULL, 0);
    }
  }
  FILE *out = fopen(outfile, "w");
  if (!out) return 4;
  for (long i = 0; i < n; i++) fprintf(out, "%d %lld\n", recs[i].child, recs[i].t);
  fclose(out);
  return 0;
}
