/*
 * udp_mmsg: the kernel peer of `npm run bench`. Two processes exchange UDP
 * datagrams over loopback in batches (sendmmsg / recvmmsg), the kernel's
 * best case for small packets without a zero-copy API.
 *
 *   udp_mmsg recv <port> <batch>                 bind 127.0.0.1:<port>, count
 *   udp_mmsg send <port> <payload> <batch>       connect, send as fast as possible
 *
 * recv prints "ready" once bound, then one line per SIGUSR1:
 *   sample <monotonic ns> <packets> <payload bytes> <drops>
 * where drops is the socket's receive-queue overflow count (SO_RXQ_OVFL).
 * Both exit on SIGTERM/SIGINT; send prints "sent <packets>" when it does.
 * Built by the bench harness with `cc -O2` at run time; no other deps.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#ifndef SO_RXQ_OVFL
#define SO_RXQ_OVFL 40
#endif

#define MAX_BATCH 1024
#define MAX_PAYLOAD 65507

static volatile sig_atomic_t stop_flag = 0;
static volatile sig_atomic_t sample_flag = 0;

static void on_stop(int s) { (void)s; stop_flag = 1; }
static void on_sample(int s) { (void)s; sample_flag = 1; }

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void handlers(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop; /* no SA_RESTART: interrupt blocking calls */
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sa.sa_handler = on_sample;
  sigaction(SIGUSR1, &sa, NULL);
}

static int parse(const char *s, long min, long max, const char *what) {
  char *end;
  long v = strtol(s, &end, 10);
  if (*s == 0 || *end != 0 || v < min || v > max) {
    fprintf(stderr, "udp_mmsg: %s must be within %ld..%ld, got \"%s\"\n", what, min, max, s);
    exit(2);
  }
  return (int)v;
}

static struct mmsghdr msgs[MAX_BATCH];
static struct iovec iovs[MAX_BATCH];
static char ctrl[MAX_BATCH][CMSG_SPACE(sizeof(uint32_t))];

static int do_recv(int port, int batch) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) { perror("udp_mmsg: socket"); return 1; }
  int one = 1, rcvbuf = 64 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof one);
  struct timeval tv = { 0, 20000 }; /* wake up to answer samples while idle */
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) { perror("udp_mmsg: bind"); return 1; }
  char *buf = malloc((size_t)batch * MAX_PAYLOAD);
  if (!buf) { perror("udp_mmsg: malloc"); return 1; }
  for (int i = 0; i < batch; i++) {
    iovs[i].iov_base = buf + (size_t)i * MAX_PAYLOAD;
    iovs[i].iov_len = MAX_PAYLOAD;
  }
  uint64_t pkts = 0, bytes = 0;
  uint32_t drops = 0;
  printf("ready\n");
  fflush(stdout);
  while (!stop_flag) {
    if (sample_flag) {
      sample_flag = 0;
      printf("sample %llu %llu %llu %u\n", (unsigned long long)now_ns(), (unsigned long long)pkts,
             (unsigned long long)bytes, drops);
      fflush(stdout);
    }
    for (int i = 0; i < batch; i++) {
      memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
      msgs[i].msg_hdr.msg_iov = &iovs[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      msgs[i].msg_hdr.msg_control = ctrl[i];
      msgs[i].msg_hdr.msg_controllen = sizeof ctrl[i];
    }
    int n = recvmmsg(fd, msgs, (unsigned)batch, MSG_WAITFORONE, NULL);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      perror("udp_mmsg: recvmmsg");
      return 1;
    }
    for (int i = 0; i < n; i++) bytes += msgs[i].msg_len;
    pkts += (uint64_t)n;
    /* The overflow count rides on every datagram; the last one is the newest. */
    struct msghdr *h = &msgs[n - 1].msg_hdr;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL) memcpy(&drops, CMSG_DATA(c), sizeof drops);
    }
  }
  printf("done %llu %llu %u\n", (unsigned long long)pkts, (unsigned long long)bytes, drops);
  return 0;
}

static int do_send(int port, int payload, int batch) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) { perror("udp_mmsg: socket"); return 1; }
  int sndbuf = 16 << 20;
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) { perror("udp_mmsg: connect"); return 1; }
  char *buf = calloc(1, (size_t)payload);
  if (!buf) { perror("udp_mmsg: calloc"); return 1; }
  for (int i = 0; i < batch; i++) {
    iovs[i].iov_base = buf;
    iovs[i].iov_len = (size_t)payload;
    memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
    msgs[i].msg_hdr.msg_iov = &iovs[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  uint64_t sent = 0;
  while (!stop_flag) {
    int n = sendmmsg(fd, msgs, (unsigned)batch, 0);
    if (n < 0) {
      if (errno == EINTR || errno == ENOBUFS || errno == EAGAIN || errno == ECONNREFUSED) continue;
      perror("udp_mmsg: sendmmsg");
      return 1;
    }
    sent += (uint64_t)n;
  }
  printf("sent %llu\n", (unsigned long long)sent);
  return 0;
}

int main(int argc, char **argv) {
  handlers();
  if (argc == 4 && strcmp(argv[1], "recv") == 0) {
    return do_recv(parse(argv[2], 1, 65535, "port"), parse(argv[3], 1, MAX_BATCH, "batch"));
  }
  if (argc == 5 && strcmp(argv[1], "send") == 0) {
    return do_send(parse(argv[2], 1, 65535, "port"), parse(argv[3], 1, MAX_PAYLOAD, "payload"),
                   parse(argv[4], 1, MAX_BATCH, "batch"));
  }
  fprintf(stderr, "usage: udp_mmsg recv <port> <batch> | udp_mmsg send <port> <payload> <batch>\n");
  return 2;
}
