/*
 * cmd_pair.c: spsync pair init / pair add -- write the pairing file, so
 * nobody assembles it by hand.  Every change is checked by the reader
 * that spsync leader/follower use (pairing.c): what `pair add` writes,
 * they accept.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sync_protocol/identity.h>
#include <sync_protocol/sync_protocol.h>

#include "cmds.h"
#include "pairing.h"

static void usage(void) {
  printf(
      "usage: spsync pair init --library UUID|new --out FILE\n"
      "       spsync pair add --pairing FILE --role leader|standby|follower\n"
      "                       (--key KEYFILE | --device UUID --public-key "
      "HEX)\n"
      "                       [--address HOST:PORT] [--name NAME]\n\n"
      "init creates a pairing file (never overwritten) for a library: a new "
      "random\nid, or UUID.  add appends a device's line to it: from its key "
      "file, or from\nthe device id and public key that spsync fingerprint "
      "prints on the device\nitself (the secret key never leaves it).  The "
      "line is refused as spsync\nleader and follower would refuse it: a "
      "device or key already listed, a\nsecond leader, a bad address (a "
      "name that does not resolve here is\nwritten, with a warning).  The "
      "file is locked, then rewritten atomically\n(a temporary file renamed "
      "over it); its other lines and comments are kept.\n\n"
      "  --address HOST:PORT  where the device listens: ipv4:port, "
      "[ipv6]:port or\n"
      "                       host:port (resolved when spsync starts and "
      "when it\n                       dials); none:\n"
      "                       never dialled (docs/pairing.md)\n"
      "  --name NAME          a label for people, 1-31 characters, no spaces "
      "or '#'\n\n"
      "Exit status: 0 written; 1 error (the file is unchanged); 2 bad "
      "arguments.\n");
}

/* Flush the directory holding `path`, so a rename into it survives a
 * crash.  Returns 0 or -1 (errno set). */
static int sync_dir(const char *path) {
  char dir[4096];
  const char *slash = strrchr(path, '/');
  int fd, rv;

  if (!slash) {
    snprintf(dir, sizeof(dir), ".");
  } else {
    snprintf(dir, sizeof(dir), "%.*s", (int)(slash == path ? 1 : slash - path),
             path);
  }
  fd = open(dir, O_RDONLY | O_DIRECTORY);
  if (fd < 0) {
    return -1;
  }
  rv = fsync(fd);
  close(fd);
  return rv;
}

/* Put the finished temporary file `tmp` at `path`: replace it, or create
 * it (failing with EEXIST if it exists).  Creation links, which is atomic;
 * on a filesystem without hard links the name is reserved with O_EXCL and
 * the file renamed over the empty reservation. */
static int place(const char *tmp, const char *path, int replace) {
  int fd;

  if (replace) {
    return rename(tmp, path);
  }
  if (link(tmp, path) == 0) {
    return 0;
  }
  if (errno != EPERM && errno != ENOTSUP && errno != EOPNOTSUPP &&
      errno != EMLINK) {
    return -1;
  }
  fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd < 0) {
    return -1;
  }
  close(fd);
  return rename(tmp, path);
}

/* Write `text` to a temporary file beside `path`, flush it to disk, then
 * rename it over `path` (replace) or put it there (create: fails if
 * `path` exists), so a reader sees the old file or the new one, never a
 * half-written one.  `st` (replace): the file's owner and group, kept
 * where this user may keep them. */
static int write_atomic(const char *path, const char *text, mode_t mode,
                        int replace, const struct stat *st) {
  char tmp[4096];
  size_t len = strlen(text);
  ssize_t n = -1;
  int fd, rv = -1;

  if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path) >=
      sizeof(tmp)) {
    fprintf(stderr, "spsync: pair: %s: name too long\n", path);
    return -1;
  }
  fd = mkstemp(tmp);
  if (fd < 0) {
    fprintf(stderr, "spsync: pair: cannot write %s: %s\n", path,
            strerror(errno));
    return -1;
  }
  /* Not ours to change: best effort (only root gives a file away). */
  if (st && (st->st_uid != geteuid() || st->st_gid != getegid())) {
    (void)!fchown(fd, st->st_uid, st->st_gid);
  }
  if (fchmod(fd, mode) == 0 && (n = write(fd, text, len)) == (ssize_t)len &&
      fsync(fd) == 0) {
    rv = place(tmp, path, replace);
    if (rv == 0) {
      rv = sync_dir(path);
    }
  } else if (n >= 0 && n != (ssize_t)len) {
    errno = EIO; /* a short write sets none */
  }
  if (rv != 0) {
    fprintf(stderr, "spsync: pair: cannot write %s: %s\n", path,
            !replace && errno == EEXIST ? "the file exists" : strerror(errno));
  }
  close(fd);
  if (rv != 0 || !replace) {
    unlink(tmp);
  }
  return rv;
}

/* Lock the pairing file at `path` for a read-modify-write: two pair add
 * at once would otherwise each append to the same old text and one line
 * would be lost.  The rename replaces the file, so a lock on a file that
 * was replaced meanwhile is retried on the new one.  Returns the locked
 * descriptor (closing it unlocks) or -1 (errno set). */
static int lock_file(const char *path) {
  struct stat a, b;
  int fd;

  for (;;) {
    fd = open(path, O_RDONLY);
    if (fd < 0) {
      return -1;
    }
    if (flock(fd, LOCK_EX) != 0 || fstat(fd, &a) != 0) {
      close(fd);
      return -1;
    }
    if (stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
      return fd;
    }
    close(fd);
  }
}

static int pair_init(int argc, char **argv) {
  static const struct option opts[] = {{"library", 1, 0, 'l'},
                                       {"out", 1, 0, 'o'},
                                       {"help", 0, 0, 'h'},
                                       {0, 0, 0, 0}};
  const char *lib = NULL, *out = NULL;
  char text[128], id[SP_UUID_STRING_LEN + 1];
  mode_t mask;
  sp_uuid uuid;
  int c;

  while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
    switch (c) {
    case 'l':
      lib = optarg;
      break;
    case 'o':
      out = optarg;
      break;
    case 'h':
      usage();
      return 0;
    default:
      return opt_error("pair", c, argv);
    }
  }
  if (!lib || !out || optind != argc) {
    return usage_error("pair",
                       "init: --library UUID|new and --out FILE are required");
  }
  if (strcmp(lib, "new") == 0) {
    sp_uuid_generate(&uuid);
  } else if (sp_uuid_parse(&uuid, lib) != 0) {
    return usage_error(
        "pair", "init: --library: '%s' is not a UUID (8-4-4-4-12 hex) or new",
        lib);
  }
  snprintf(text, sizeof(text),
           "# spsync pairing file (docs/pairing.md); add devices with\n"
           "# spsync pair add.\nlibrary %s\n",
           sp_uuid_format(&uuid, id));
  mask = umask(0);
  umask(mask);
  if (write_atomic(out, text, 0644 & ~mask, 0, NULL) != 0) {
    return 1;
  }
  printf("library %s\n", id);
  return 0;
}

/* The whole file as it is, to be rewritten with one line more. */
static char *slurp(const char *path, struct stat *st) {
  FILE *f = fopen(path, "r");
  char *buf = NULL;
  size_t n;

  if (!f) {
    return NULL;
  }
  if (fstat(fileno(f), st) == 0 && st->st_size < (1 << 20)) {
    buf = malloc((size_t)st->st_size + 2);
  }
  if (buf) {
    n = fread(buf, 1, (size_t)st->st_size, f);
    if (n > 0 && buf[n - 1] != '\n') {
      buf[n++] = '\n';
    }
    buf[n] = '\0';
  }
  fclose(f);
  return buf;
}

static int pair_add(int argc, char **argv) {
  static const struct option opts[] = {
      {"pairing", 1, 0, 'p'},    {"key", 1, 0, 'k'},  {"device", 1, 0, 'd'},
      {"public-key", 1, 0, 'K'}, {"role", 1, 0, 'r'}, {"address", 1, 0, 'a'},
      {"name", 1, 0, 'n'},       {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
  const char *path = NULL, *keyfile = NULL, *device = NULL, *pub = NULL,
             *role = NULL, *address = NULL, *name = NULL;
  char line[PAIRING_LINE_MAX + 2], parsed[PAIRING_LINE_MAX + 2], err[512];
  char id[SP_UUID_STRING_LEN + 1], hex[2 * SP_PUBLIC_KEY_LEN + 1];
  uint8_t pk[SP_PUBLIC_KEY_LEN];
  const pairing_device *old;
  struct stat st;
  pairing *p = NULL;
  sp_uuid uuid;
  char *text = NULL, *all, *real;
  int c, rv = 1, lock = -1;

  while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
    switch (c) {
    case 'p':
      path = optarg;
      break;
    case 'k':
      keyfile = optarg;
      break;
    case 'd':
      device = optarg;
      break;
    case 'K':
      pub = optarg;
      break;
    case 'r':
      role = optarg;
      break;
    case 'a':
      address = optarg;
      break;
    case 'n':
      name = optarg;
      break;
    case 'h':
      usage();
      return 0;
    default:
      return opt_error("pair", c, argv);
    }
  }
  if (!path || !role || optind != argc) {
    return usage_error("pair", "add: --pairing FILE and --role are required");
  }
  if (strcmp(role, "leader") && strcmp(role, "standby") &&
      strcmp(role, "follower")) {
    return usage_error("pair", "add: --role is leader, standby or follower");
  }
  if (keyfile ? device || pub : !device || !pub) {
    return usage_error("pair", "add: give --key KEYFILE, or --device UUID and "
                               "--public-key HEX");
  }
  if (name && (!*name || strlen(name) > 31 || strpbrk(name, " \t\r\n#"))) {
    return usage_error("pair",
                       "add: --name has 1-31 characters, no spaces or '#'");
  }
  if (address && (!*address || strpbrk(address, " \t\r\n#"))) {
    return usage_error("pair", "add: --address is HOST:PORT");
  }
  if (keyfile) {
    sp_identity *ident;
    int r = sp_identity_load(&ident, keyfile, NULL);
    if (r != 0) {
      fprintf(stderr, "spsync: pair: cannot load key %s: %s\n", keyfile,
              r == SP_ERR_IO ? strerror(errno) : sp_strerror(r));
      return 1;
    }
    uuid = *sp_identity_device_id(ident);
    sp_identity_public_key(ident, pk);
    sp_identity_del(ident);
  } else if (sp_uuid_parse(&uuid, device) != 0) {
    return usage_error("pair", "add: --device: not a UUID");
  } else if (sp_public_key_parse(pk, pub) != 0) {
    return usage_error("pair", "add: --public-key: not 64 hex digits");
  }
  sp_public_key_format(pk, hex);
  snprintf(line, sizeof(line), "device %s %s %-8s %s%s%s\n",
           sp_uuid_format(&uuid, id), hex, role, address ? address : "-",
           name ? " " : "", name ? name : "");
  /* A symlink's target is rewritten, not the link replaced by a file. */
  real = realpath(path, NULL);
  if (!real) {
    fprintf(stderr, "spsync: pair: cannot read %s: %s\n", path,
            strerror(errno));
    return 1;
  }
  path = real;
  lock = lock_file(path);
  if (lock < 0) {
    fprintf(stderr, "spsync: pair: cannot lock %s: %s\n", path,
            strerror(errno));
    goto out;
  }
  p = malloc(sizeof(*p));
  errno = 0;
  text = slurp(path, &st);
  if (!p || !text) {
    fprintf(stderr, "spsync: pair: cannot read %s: %s\n", path,
            p && !text && errno ? strerror(errno) : "too large");
    goto out;
  }
  /* The file as the reader sees it, then the new line through the same
   * checks; a leader it would refuse is refused here.  Read twice (as
   * text, then parsed), both under the lock: the same bytes. */
  if (pairing_read(p, path, err, sizeof(err)) != 0) {
    fprintf(stderr, "spsync: pair: %s (fix the file first)\n", err);
    goto out;
  }
  if (!p->have_library) {
    fprintf(stderr,
            "spsync: pair: %s has no library line (spsync pair "
            "init makes one)\n",
            path);
    goto out;
  }
  memcpy(parsed, line, sizeof(parsed));
  if (pairing_parse_line(p, parsed, p->lines + 1, err, sizeof(err)) != 0) {
    fprintf(stderr, "spsync: pair: %s: %s\n", path, err);
    goto out;
  }
  /* Another machine's name need not resolve here (spsync resolves it
   * again when it dials): said, not refused. */
  if (p->dev[p->ndev - 1].resolve_err[0]) {
    fprintf(stderr, "spsync: pair: warning: %s (written anyway: resolved "
            "again when the device is dialed)\n",
            p->dev[p->ndev - 1].resolve_err);
  }
  if (strcmp(role, "leader") == 0 && (old = pairing_leader(p)) != NULL &&
      !sp_uuid_equal(&old->id, &uuid)) {
    fprintf(stderr,
            "spsync: pair: %s: line %d already names device %s "
            "the leader (one leader per file)\n",
            path, old->line, sp_uuid_format(&old->id, id));
    goto out;
  }
  all = malloc(strlen(text) + strlen(line) + 1);
  if (!all) {
    fprintf(stderr, "spsync: pair: out of memory\n");
    goto out;
  }
  strcpy(all, text);
  strcat(all, line);
  rv = write_atomic(path, all, st.st_mode & 07777, 1, &st) == 0 ? 0 : 1;
  free(all);
  if (rv == 0) {
    fputs(line, stdout);
  }
out:
  if (lock >= 0) {
    close(lock); /* after the rename: the next writer reads our line */
  }
  free(text);
  free(p);
  free(real);
  return rv;
}

int cmd_pair(int argc, char **argv) {
  if (argc < 2) {
    return usage_error("pair", "init or add?");
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    usage();
    return 0;
  }
  if (!strcmp(argv[1], "init")) {
    return pair_init(argc - 1, argv + 1);
  }
  if (!strcmp(argv[1], "add")) {
    return pair_add(argc - 1, argv + 1);
  }
  return usage_error("pair", "unknown subcommand '%s'", argv[1]);
}
