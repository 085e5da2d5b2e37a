// tools/train/tcp.h: listening and connecting for the ranks' rendezvous.
#ifndef LORAPIPE_TCP_H
#define LORAPIPE_TCP_H

// Rank 0: a socket listening on port (0: any free one) on every address
// family the resolver offers (IPv6 also taking IPv4 peers); the port it got
// in *bound_port. Dies with one line naming the port when it cannot.
int tcp_listen(int port, int backlog, int *bound_port);
// The same for rank `rank` (point-to-point links: every rank with peers listens).
int tcp_listen_as(int rank, int port, int backlog, int *bound_port);

// One attempt at host:port from rank `rank`; -1 when nobody answers (yet).
// Dies with one line when the address does not resolve.
int tcp_connect_once(const char *host, int port, int rank);
// The same with `whose` naming the address in that message ("rank 3's
// point-to-point address"); tcp_connect_once says "rank 0's address".
int tcp_connect_as(const char *host, int port, int rank, const char *whose);

#endif
