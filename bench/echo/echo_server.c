/*
 * The network limit: a minimal framed-Thrift "echo" server.
 *
 * It speaks just enough of Thrift's framed binary protocol for a real Thrift client (rtbserve
 * loadgen) to drive it: it reads each frame, finds the method name and sequence id, and answers
 * with a canned reply recorded from the real server for that method, with the sequence id
 * patched in. No parsing, no model, one thread, epoll: what is left is the cost of the loopback
 * network stack, the framing and the client.
 *
 * usage: echo_server PORT METHOD=REPLY_FILE [METHOD=REPLY_FILE ...]
 * Each REPLY_FILE holds one complete framed reply (4-byte length + strict binary message).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FRAME (1u << 20)
#define MAX_METHODS 8
#define MAX_EVENTS 256

struct reply {
    char name[64];
    size_t name_len;
    unsigned char *bytes;
    size_t len;
    size_t seqid_at; /* offset of the 4-byte sequence id inside bytes */
};

struct conn {
    int fd;
    unsigned char *in;
    size_t in_len, in_cap;
    unsigned char *out;
    size_t out_len, out_cap, out_sent;
};

static struct reply replies[MAX_METHODS];
static int n_replies;
static volatile sig_atomic_t stopping;

static void on_signal(int sig) { (void)sig; stopping = 1; }

static uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void die(const char *what) { perror(what); exit(1); }

static void load_reply(const char *spec) {
    const char *eq = strchr(spec, '=');
    if (!eq || eq == spec || n_replies == MAX_METHODS) {
        fprintf(stderr, "bad reply spec %s (want METHOD=FILE)\n", spec);
        exit(2);
    }
    struct reply *r = &replies[n_replies++];
    r->name_len = (size_t)(eq - spec);
    if (r->name_len >= sizeof r->name) { fprintf(stderr, "method name too long\n"); exit(2); }
    memcpy(r->name, spec, r->name_len);
    FILE *f = fopen(eq + 1, "rb");
    if (!f) die(eq + 1);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (size < 16 || size > (long)MAX_FRAME) { fprintf(stderr, "%s: bad size\n", eq + 1); exit(2); }
    r->bytes = malloc((size_t)size);
    r->len = (size_t)size;
    if (!r->bytes || fread(r->bytes, 1, r->len, f) != r->len) die("read reply");
    fclose(f);
    /* frame length, then strict header: version|type, name length, name, seqid */
    uint32_t name_len = be32(r->bytes + 8);
    r->seqid_at = 12 + name_len;
    if (!(r->bytes[4] & 0x80) || r->seqid_at + 4 > r->len) {
        fprintf(stderr, "%s: not a strict binary Thrift frame\n", eq + 1);
        exit(2);
    }
}

/* Method name and sequence id of one request message (strict or old-style binary header). */
static int parse_header(const unsigned char *msg, size_t len, const unsigned char **name,
                        size_t *name_len, const unsigned char **seqid) {
    size_t at;
    if (len < 8) return -1;
    if (msg[0] & 0x80) {          /* strict: version|type, i32 name length, name, seqid */
        *name_len = be32(msg + 4);
        at = 8;
    } else {                      /* old: i32 name length, name, type byte, seqid */
        *name_len = be32(msg);
        at = 4;
    }
    if (*name_len > len || at + *name_len + 5 > len) return -1;
    *name = msg + at;
    at += *name_len + (msg[0] & 0x80 ? 0 : 1);
    *seqid = msg + at;
    return 0;
}

static int reserve(unsigned char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t cap2 = *cap ? *cap : 4096;
    while (cap2 < need) cap2 *= 2;
    unsigned char *p = realloc(*buf, cap2);
    if (!p) return -1;
    *buf = p;
    *cap = cap2;
    return 0;
}

static void close_conn(int ep, struct conn *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->in);
    free(c->out);
    free(c);
}

/* Answer every complete frame in the input buffer. Returns -1 to drop the connection. */
static int answer_frames(struct conn *c) {
    size_t at = 0;
    while (c->in_len - at >= 4) {
        uint32_t flen = be32(c->in + at);
        if (flen > MAX_FRAME) return -1;
        if (c->in_len - at - 4 < flen) break;
        const unsigned char *name, *seqid;
        size_t name_len;
        if (parse_header(c->in + at + 4, flen, &name, &name_len, &seqid) < 0) return -1;
        struct reply *r = NULL;
        for (int i = 0; i < n_replies; i++)
            if (replies[i].name_len == name_len && !memcmp(replies[i].name, name, name_len))
                r = &replies[i];
        if (!r) return -1;
        if (reserve(&c->out, &c->out_cap, c->out_len + r->len) < 0) return -1;
        memcpy(c->out + c->out_len, r->bytes, r->len);
        memcpy(c->out + c->out_len + r->seqid_at, seqid, 4);
        c->out_len += r->len;
        at += 4 + flen;
    }
    memmove(c->in, c->in + at, c->in_len - at);
    c->in_len -= at;
    return 0;
}

static int flush_out(struct conn *c) {
    while (c->out_sent < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_sent, c->out_len - c->out_sent, MSG_NOSIGNAL);
        if (n < 0) return (errno == EAGAIN || errno == EWOULDBLOCK) ? 1 : -1;
        c->out_sent += (size_t)n;
    }
    c->out_len = c->out_sent = 0;
    return 0;
}

static int on_readable(int ep, struct conn *c) {
    for (;;) {
        if (reserve(&c->in, &c->in_cap, c->in_len + 65536) < 0) return -1;
        ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (n == 0) return -1;
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            return -1;
        }
        c->in_len += (size_t)n;
    }
    if (answer_frames(c) < 0) return -1;
    int pending = flush_out(c);
    if (pending < 0) return -1;
    struct epoll_event ev = {.events = EPOLLIN | (pending ? EPOLLOUT : 0), .data.ptr = c};
    return epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s PORT METHOD=REPLY_FILE...\n", argv[0]);
        return 2;
    }
    for (int i = 2; i < argc; i++) load_reply(argv[i]);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (lfd < 0) die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    if (listen(lfd, 1024) < 0) die("listen");

    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    fprintf(stderr, "echo_server listening on 127.0.0.1:%s\n", argv[1]);

    struct epoll_event events[MAX_EVENTS];
    while (!stopping) {
        int n = epoll_wait(ep, events, MAX_EVENTS, 500);
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *nc = calloc(1, sizeof *nc);
                    if (!nc) { close(fd); continue; }
                    nc->fd = fd;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            int rc = 0;
            if (events[i].events & (EPOLLERR | EPOLLHUP)) rc = -1;
            if (rc == 0 && (events[i].events & EPOLLOUT)) {
                int pending = flush_out(c);
                if (pending < 0) rc = -1;
                else if (!pending) {
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
            }
            if (rc == 0 && (events[i].events & EPOLLIN)) rc = on_readable(ep, c);
            if (rc < 0) close_conn(ep, c);
        }
    }
    return 0;
}
