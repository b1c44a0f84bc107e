/*
 * sp_identity.c: Ed25519 device identities (libsodium) and key files.
 *
 * Key file, version 1: exactly four lines of ASCII, each ended by "\n",
 * nothing else (216 bytes):
 *
 *   sync_protocol device key v1
 *   device <device id, 36 lowercase characters 8-4-4-4-12>
 *   public <Ed25519 public key, 64 lowercase hex digits>
 *   secret <Ed25519 secret seed (RFC 8032 private key), 64 lowercase hex>
 *
 * The public line is redundant on purpose: loading derives the public key
 * from the seed and refuses a file where the two disagree, which catches a
 * damaged or hand-edited file before it is used to authenticate.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "sync_protocol/errors.h"
#include "sync_protocol/identity.h"
#include "sync_protocol/uuid.h"
#include "sp_identity_int.h"
#include "sp_mem_int.h"

struct sp_identity {
  sp_mem mem;
  sp_uuid device_id;
  uint8_t public_key[SP_PUBLIC_KEY_LEN];
  uint8_t seed[SP_SECRET_SEED_LEN];
};

static const char magic_line[] = "sync_protocol device key v1\n";
static const char device_tag[] = "device ";
static const char public_tag[] = "public ";
static const char secret_tag[] = "secret ";

#define LINE_LEN(tag, n) (sizeof(tag) - 1 + (n) + 1)
#define KEYFILE_LEN                                                        \
  (sizeof(magic_line) - 1 + LINE_LEN(device_tag, SP_UUID_STRING_LEN) +     \
   LINE_LEN(public_tag, 2 * SP_PUBLIC_KEY_LEN) +                           \
   LINE_LEN(secret_tag, 2 * SP_SECRET_SEED_LEN))

/* Anything longer than this is not a key file; reading stops there. */
#define KEYFILE_READ_MAX 1024

/* Decode exactly 2n hex digits, either case with allow_upper, else only
 * lowercase; 0 or -1.  `out` is untouched on error. */
static int hex_decode(uint8_t *out, const char *in, size_t n,
                      int allow_upper) {
  uint8_t tmp[64];
  char canon[2 * sizeof(tmp) + 1];
  const char *end = NULL;
  size_t len = 0;
  int rv = -1;

  if (n > sizeof(tmp)) {
    return -1;
  }
  if (sodium_hex2bin(tmp, n, in, 2 * n, NULL, &len, &end) == 0 && len == n &&
      end == in + 2 * n) {
    /* libsodium takes either case; a key file has one spelling, so it
     * must read back as exactly what it encodes to (in constant time: it
     * is the secret seed). */
    sodium_bin2hex(canon, sizeof(canon), tmp, n);
    if (allow_upper || sodium_memcmp(canon, in, 2 * n) == 0) {
      memcpy(out, tmp, n);
      rv = 0;
    }
  }
  sodium_memzero(tmp, sizeof(tmp));
  sodium_memzero(canon, sizeof(canon));
  return rv;
}

/* Derive the public key from the seed; 0 or -1. */
static int derive_public(uint8_t pk[SP_PUBLIC_KEY_LEN],
                         const uint8_t seed[SP_SECRET_SEED_LEN]) {
  uint8_t sk[crypto_sign_SECRETKEYBYTES];
  int rv = crypto_sign_seed_keypair(pk, sk, seed);

  sodium_memzero(sk, sizeof(sk));
  return rv == 0 ? 0 : -1;
}

static sp_identity *identity_alloc(const sp_mem *mem) {
  sp_mem m;
  sp_identity *id;

  sp_mem_resolve(&m, mem);
  id = sp_calloc(&m, 1, sizeof(*id));
  if (id) {
    id->mem = m;
  }
  return id;
}

int sp_identity_generate(sp_identity **pid, const sp_uuid *device_id,
                         const sp_mem *mem) {
  sp_identity *id;

  if (pid) {
    *pid = NULL;
  }
  if (!pid || (device_id && sp_uuid_is_nil(device_id))) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (sodium_init() < 0) {
    return SP_ERR_INTERNAL;
  }
  id = identity_alloc(mem);
  if (!id) {
    return SP_ERR_NOMEM;
  }
  if (device_id) {
    id->device_id = *device_id;
  } else {
    sp_uuid_generate(&id->device_id);
  }
  randombytes_buf(id->seed, sizeof(id->seed));
  if (derive_public(id->public_key, id->seed) != 0) {
    sp_identity_del(id);
    return SP_ERR_INTERNAL;
  }
  *pid = id;
  return 0;
}

void sp_identity_del(sp_identity *id) {
  sp_mem mem;

  if (!id) {
    return;
  }
  mem = id->mem;
  sodium_memzero(id, sizeof(*id));
  sp_free(&mem, id);
}

const sp_uuid *sp_identity_device_id(const sp_identity *id) {
  return &id->device_id;
}

void sp_identity_public_key(const sp_identity *id,
                            uint8_t out[SP_PUBLIC_KEY_LEN]) {
  memcpy(out, id->public_key, SP_PUBLIC_KEY_LEN);
}

void sp_identity_secret_seed(const sp_identity *id,
                             uint8_t seed[SP_SECRET_SEED_LEN]) {
  memcpy(seed, id->seed, SP_SECRET_SEED_LEN);
}

/* ---- key file ---- */

static size_t put_line(char *p, const char *tag, const char *value,
                       size_t n) {
  size_t taglen = strlen(tag);

  memcpy(p, tag, taglen);
  memcpy(p + taglen, value, n);
  p[taglen + n] = '\n';
  return taglen + n + 1;
}

static void format_keyfile(const sp_identity *id, char out[KEYFILE_LEN]) {
  char uuid[SP_UUID_STRING_LEN + 1];
  char hex[2 * SP_SECRET_SEED_LEN + 1];
  char *p = out;

  memcpy(p, magic_line, sizeof(magic_line) - 1);
  p += sizeof(magic_line) - 1;
  sp_uuid_format(&id->device_id, uuid);
  p += put_line(p, device_tag, uuid, SP_UUID_STRING_LEN);
  sodium_bin2hex(hex, sizeof(hex), id->public_key, SP_PUBLIC_KEY_LEN);
  p += put_line(p, public_tag, hex, 2 * SP_PUBLIC_KEY_LEN);
  sodium_bin2hex(hex, sizeof(hex), id->seed, SP_SECRET_SEED_LEN);
  put_line(p, secret_tag, hex, 2 * SP_SECRET_SEED_LEN);
  sodium_memzero(hex, sizeof(hex));
}

static int write_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return -1;
    }
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Make the new directory entry durable too; best effort, as some file
 * systems refuse fsync on directories. */
static void sync_parent_dir(const char *path) {
  char dir[4096];
  const char *slash = strrchr(path, '/');
  size_t n;
  int fd;

  if (!slash) {
    memcpy(dir, ".", 2);
  } else {
    n = slash == path ? 1 : (size_t)(slash - path);
    if (n >= sizeof(dir)) {
      return;
    }
    memcpy(dir, path, n);
    dir[n] = '\0';
  }
  fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    (void)fsync(fd);
    close(fd);
  }
}

int sp_identity_save(const sp_identity *id, const char *path) {
  char text[KEYFILE_LEN];
  int fd, saved;

  if (!id || !path || !*path) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
            0600);
  if (fd < 0) {
    return errno == EEXIST ? SP_ERR_EXISTS : SP_ERR_IO;
  }
  format_keyfile(id, text);
  /* The umask can only have removed bits; make the mode exact anyway. */
  if (fchmod(fd, 0600) != 0 || write_all(fd, text, sizeof(text)) != 0 ||
      fsync(fd) != 0) {
    saved = errno;
    sodium_memzero(text, sizeof(text));
    close(fd);
    /* We created it (O_EXCL): remove the partial file so a retry works. */
    unlink(path);
    errno = saved;
    return SP_ERR_IO;
  }
  sodium_memzero(text, sizeof(text));
  if (close(fd) != 0) {
    saved = errno;
    unlink(path);
    errno = saved;
    return SP_ERR_IO;
  }
  sync_parent_dir(path);
  return 0;
}

/* Match "<tag><n chars>\n" at `*p`; on success advance `*p` and point
 * `*value` at the n characters. */
static int take_line(const char **p, const char *end, const char *tag,
                     size_t n, const char **value) {
  size_t taglen = strlen(tag);

  if ((size_t)(end - *p) < taglen + n + 1 || memcmp(*p, tag, taglen) != 0 ||
      (*p)[taglen + n] != '\n') {
    return -1;
  }
  *value = *p + taglen;
  *p += taglen + n + 1;
  return 0;
}

static int parse_keyfile(sp_identity *id, const char *buf, size_t len) {
  const char *p = buf, *end = buf + len, *v;
  char uuid[SP_UUID_STRING_LEN + 1], canon[SP_UUID_STRING_LEN + 1];
  uint8_t pk[SP_PUBLIC_KEY_LEN], derived[SP_PUBLIC_KEY_LEN];
  uint8_t seed[SP_SECRET_SEED_LEN];
  int rv = SP_ERR_KEYFILE_FORMAT;

  if (len != KEYFILE_LEN ||
      memcmp(p, magic_line, sizeof(magic_line) - 1) != 0) {
    return SP_ERR_KEYFILE_FORMAT;
  }
  p += sizeof(magic_line) - 1;
  if (take_line(&p, end, device_tag, SP_UUID_STRING_LEN, &v) != 0) {
    return SP_ERR_KEYFILE_FORMAT;
  }
  memcpy(uuid, v, SP_UUID_STRING_LEN);
  uuid[SP_UUID_STRING_LEN] = '\0';
  /* Only the canonical (lowercase) form, so a file has one spelling. */
  if (sp_uuid_parse(&id->device_id, uuid) != 0 ||
      strcmp(sp_uuid_format(&id->device_id, canon), uuid) != 0 ||
      sp_uuid_is_nil(&id->device_id)) {
    return SP_ERR_KEYFILE_FORMAT;
  }
  if (take_line(&p, end, public_tag, 2 * SP_PUBLIC_KEY_LEN, &v) != 0 ||
      hex_decode(pk, v, SP_PUBLIC_KEY_LEN, 0) != 0) {
    return SP_ERR_KEYFILE_FORMAT;
  }
  if (take_line(&p, end, secret_tag, 2 * SP_SECRET_SEED_LEN, &v) != 0 ||
      hex_decode(seed, v, SP_SECRET_SEED_LEN, 0) != 0 || p != end) {
    goto out;
  }
  if (derive_public(derived, seed) != 0 ||
      sodium_memcmp(derived, pk, SP_PUBLIC_KEY_LEN) != 0) {
    goto out;
  }
  memcpy(id->public_key, pk, SP_PUBLIC_KEY_LEN);
  memcpy(id->seed, seed, SP_SECRET_SEED_LEN);
  rv = 0;
out:
  sodium_memzero(seed, sizeof(seed));
  return rv;
}

/* Read at most KEYFILE_READ_MAX bytes; returns the length, or -1 (errno)
 * or -2 (file too long). */
static ssize_t read_limited(int fd, char *buf) {
  size_t len = 0;

  for (;;) {
    ssize_t n = read(fd, buf + len, KEYFILE_READ_MAX - len);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return -1;
    }
    if (n == 0) {
      return (ssize_t)len;
    }
    len += (size_t)n;
    if (len == KEYFILE_READ_MAX) {
      char extra;
      n = read(fd, &extra, 1);
      return n == 0 ? (ssize_t)len : -2;
    }
  }
}

/* Who may own a key file: the user that loads it, or root (a service
 * reading a key that an administrator installed). */
static int owner_ok(uid_t uid) { return uid == geteuid() || uid == 0; }

int sp_identity_load(sp_identity **pid, const char *path, const sp_mem *mem) {
  char buf[KEYFILE_READ_MAX];
  struct stat st;
  sp_identity *id;
  ssize_t len;
  int fd, rv, saved;

  if (pid) {
    *pid = NULL;
  }
  if (!pid || !path || !*path) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (sodium_init() < 0) {
    return SP_ERR_INTERNAL;
  }
  /* O_NOFOLLOW: a symlink is not a regular file we checked; O_NONBLOCK:
   * opening a FIFO must not hang before fstat refuses it. */
  fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) {
    return errno == ELOOP ? SP_ERR_KEYFILE_PERMISSIONS : SP_ERR_IO;
  }
  if (fstat(fd, &st) != 0) {
    saved = errno;
    close(fd);
    errno = saved;
    return SP_ERR_IO;
  }
  if (!S_ISREG(st.st_mode) || (st.st_mode & 077) != 0 ||
      !owner_ok(st.st_uid)) {
    close(fd);
    return SP_ERR_KEYFILE_PERMISSIONS;
  }
  len = read_limited(fd, buf);
  saved = errno;
  close(fd);
  if (len == -1) {
    errno = saved;
    return SP_ERR_IO;
  }
  if (len < 0) {
    return SP_ERR_KEYFILE_FORMAT;
  }
  id = identity_alloc(mem);
  if (!id) {
    sodium_memzero(buf, sizeof(buf));
    return SP_ERR_NOMEM;
  }
  rv = parse_keyfile(id, buf, (size_t)len);
  sodium_memzero(buf, sizeof(buf));
  if (rv != 0) {
    sp_identity_del(id);
    return rv;
  }
  *pid = id;
  return 0;
}

/* ---- printable forms of public keys ---- */

int sp_identity_fingerprint(const uint8_t public_key[SP_PUBLIC_KEY_LEN],
                            char *out, size_t outlen) {
  uint8_t h[32];
  char *p;
  size_t i;

  if (!public_key || !out) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  if (outlen < SP_FINGERPRINT_LEN + 1) {
    return SP_ERR_NOBUF;
  }
  crypto_generichash(h, sizeof(h), public_key, SP_PUBLIC_KEY_LEN, NULL, 0);
  memcpy(out, "sp1:", 4);
  p = out + 4;
  for (i = 0; i < 20; i += 2) {
    if (i > 0) {
      *p++ = ':';
    }
    /* Its NUL lands where the next ':' (or the final NUL) goes. */
    sodium_bin2hex(p, 5, h + i, 2);
    p += 4;
  }
  *p = '\0';
  return 0;
}

void sp_public_key_format(const uint8_t key[SP_PUBLIC_KEY_LEN],
                          char out[2 * SP_PUBLIC_KEY_LEN + 1]) {
  sodium_bin2hex(out, 2 * SP_PUBLIC_KEY_LEN + 1, key, SP_PUBLIC_KEY_LEN);
}

int sp_public_key_parse(uint8_t key[SP_PUBLIC_KEY_LEN], const char *text) {
  if (!key || !text || strlen(text) != 2 * SP_PUBLIC_KEY_LEN ||
      hex_decode(key, text, SP_PUBLIC_KEY_LEN, 1) != 0) {
    return SP_ERR_INVALID_ARGUMENT;
  }
  return 0;
}
