// tools/train/tcp.c: the two socket steps every rendezvous here takes (rank 0
// listening, the others connecting), for dist.c's NCCL id exchange and
// host_comm.c's collectives and point-to-point links alike.
#include "tcp.h"
#include "check.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int tcp_listen(int port, int backlog, int *bound_port) { return tcp_listen_as(0, port, backlog, bound_port); }

int tcp_listen_as(int rank, int port, int backlog, int *bound_port) {
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {0}, *ai, *a;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int e = getaddrinfo(NULL, ps, &hints, &ai);
    if (e) die("rank %d: port %s: %s", rank, ps, gai_strerror(e));
    int s = -1, err = 0;
    // IPv6 first where the resolver lists it: with V6ONLY off it takes IPv4 peers too.
    for (a = ai; a; a = a->ai_next) {
        s = socket(a->ai_family, SOCK_STREAM, 0);
        if (s < 0) { err = errno; continue; }
        int one = 1, zero = 0;
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (a->ai_family == AF_INET6) setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        if (bind(s, a->ai_addr, a->ai_addrlen) == 0 && listen(s, backlog) == 0) break;
        err = errno;
        close(s);
        s = -1;
    }
    freeaddrinfo(ai);
    if (s < 0) die("rank %d: cannot listen on port %s: %s", rank, ps, strerror(err));
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(s, (struct sockaddr *)&ss, &sl);
    *bound_port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                           : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return s;
}

int tcp_connect_once(const char *host, int port, int rank) { return tcp_connect_as(host, port, rank, "rank 0's address"); }

int tcp_connect_as(const char *host, int port, int rank, const char *whose) {
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {0}, *ai, *a;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int e = getaddrinfo(host, ps, &hints, &ai);
    if (e) die("rank %d: %s %s:%s: %s", rank, whose, host, ps, gai_strerror(e));
    int s = -1;
    for (a = ai; a; a = a->ai_next) {
        s = socket(a->ai_family, SOCK_STREAM, 0);
        if (s >= 0 && connect(s, a->ai_addr, a->ai_addrlen) == 0) break;
        if (s >= 0) close(s);
        s = -1;
    }
    freeaddrinfo(ai);
    return s;
}
