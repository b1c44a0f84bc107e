#!/bin/sh
# The core (codec, sessions, handler, node, in-memory transport and store)
# must never read a clock or touch a socket, a file or a thread: time comes
# in as a parameter, bytes leave through the transport vtable.  Check the
# undefined symbols of the core's object files against that list.
set -eu
forbidden='^(clock_gettime|clock|time|gettimeofday|timespec_get|socket|bind|listen|accept|accept4|connect|send|sendto|sendmsg|sendmmsg|recv|recvfrom|recvmsg|recvmmsg|poll|ppoll|select|epoll_create1|epoll_wait|epoll_ctl|read|write|open|open64|openat|fopen|fopen64|sleep|usleep|nanosleep|pthread_create|pthread_mutex_lock|getrandom|rand|random|srand)$'
status=0
for obj in "$@"; do
  bad=$(nm -u "$obj" | awk '{print $2}' | sed 's/@.*//' | grep -E "$forbidden" || true)
  if [ -n "$bad" ]; then
    echo "FAIL: $(basename "$obj") calls: $(echo $bad)" >&2
    status=1
  fi
done
[ $status -eq 0 ] && echo "ok: $# core objects call no clock, socket, file or thread function"
exit $status
