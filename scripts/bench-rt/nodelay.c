/* LD_PRELOAD shim for scripts/bench-request-token --nodelay-shim: sets TCP_NODELAY on every
 * TCP socket the process connects (for the sidecar: its SMTP and Redis connections), which
 * the sidecar's SMTP client (lettre 0.11.23) does not do. A diagnostic: it shows what the
 * sidecar's requestToken costs without the Nagle / delayed-ACK stall, without touching the
 * sidecar's code. Built by the script with `cc -shared -fPIC`. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real)(int, const struct sockaddr *, socklen_t);
    if (!real) real = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "connect");
    if (addr && (addr->sa_family == AF_INET || addr->sa_family == AF_INET6)) {
        int one = 1, type = 0;
        socklen_t type_len = sizeof type;
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_len) == 0 && type == SOCK_STREAM)
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return real(fd, addr, len);
}
