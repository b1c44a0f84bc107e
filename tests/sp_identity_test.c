/*
 * sp_identity_test.c: key generation, key files, fingerprints.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "sync_protocol/errors.h"
#include "sync_protocol/identity.h"
#include "sync_protocol/uuid.h"
#include "sp_identity_int.h"
#include "sp_test_mem.h"

static char tmpdir[256];

static int setup_dir(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof(tmpdir), "/tmp/sp_identity_test.XXXXXX");
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state) {
  char cmd[300];

  (void)state;
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
  return system(cmd) == 0 ? 0 : -1;
}

static void path_of(char *out, size_t n, const char *name) {
  snprintf(out, n, "%s/%s", tmpdir, name);
}

static void write_file(const char *path, const char *text, size_t len,
                       mode_t mode) {
  int fd;

  unlink(path);
  fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, text, len), (ssize_t)len);
  assert_int_equal(fchmod(fd, mode), 0);
  close(fd);
}

static void read_file(const char *path, char *buf, size_t cap, size_t *len) {
  FILE *f = fopen(path, "rb");

  assert_non_null(f);
  *len = fread(buf, 1, cap, f);
  fclose(f);
}

static void test_generate(void **state) {
  sp_identity *a = NULL, *b = NULL;
  sp_uuid dev, nil;
  uint8_t pa[SP_PUBLIC_KEY_LEN], pb[SP_PUBLIC_KEY_LEN];

  (void)state;
  assert_int_equal(sp_identity_generate(&a, NULL, NULL), 0);
  assert_int_equal(sp_identity_generate(&b, NULL, NULL), 0);
  /* Random v4 device ids, different keys. */
  assert_int_equal(sp_identity_device_id(a)->bytes[6] >> 4, 4);
  assert_int_equal(sp_identity_device_id(a)->bytes[8] >> 6, 2);
  assert_false(sp_uuid_equal(sp_identity_device_id(a),
                             sp_identity_device_id(b)));
  sp_identity_public_key(a, pa);
  sp_identity_public_key(b, pb);
  assert_memory_not_equal(pa, pb, SP_PUBLIC_KEY_LEN);
  sp_identity_del(a);
  sp_identity_del(b);

  sp_uuid_generate(&dev);
  assert_int_equal(sp_identity_generate(&a, &dev, NULL), 0);
  assert_true(sp_uuid_equal(sp_identity_device_id(a), &dev));
  sp_identity_del(a);

  memset(&nil, 0, sizeof(nil));
  assert_int_equal(sp_identity_generate(&a, &nil, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_identity_generate(NULL, NULL, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  sp_identity_del(NULL);
}

/* The key signs, and the public key is the one libsodium derives. */
static void test_key_pair_consistent(void **state) {
  sp_identity *a;
  uint8_t seed[SP_SECRET_SEED_LEN], pk[SP_PUBLIC_KEY_LEN];
  uint8_t pk2[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
  uint8_t sig[crypto_sign_BYTES];
  static const uint8_t msg[] = "hello";

  (void)state;
  assert_int_equal(sp_identity_generate(&a, NULL, NULL), 0);
  sp_identity_secret_seed(a, seed);
  sp_identity_public_key(a, pk);
  assert_int_equal(crypto_sign_seed_keypair(pk2, sk, seed), 0);
  assert_memory_equal(pk, pk2, SP_PUBLIC_KEY_LEN);
  crypto_sign_detached(sig, NULL, msg, sizeof(msg), sk);
  assert_int_equal(crypto_sign_verify_detached(sig, msg, sizeof(msg), pk), 0);
  sp_identity_del(a);
}

static void test_save_load_round_trip(void **state) {
  char path[300], text[1024];
  sp_identity *a, *b;
  uint8_t pa[SP_PUBLIC_KEY_LEN], pb[SP_PUBLIC_KEY_LEN];
  uint8_t sa[SP_SECRET_SEED_LEN], sb[SP_SECRET_SEED_LEN];
  char uuid[SP_UUID_STRING_LEN + 1], line[128];
  struct stat st;
  size_t len;
  mode_t old;

  (void)state;
  path_of(path, sizeof(path), "round.key");
  assert_int_equal(sp_identity_generate(&a, NULL, NULL), 0);
  /* A permissive umask must not loosen the mode. */
  old = umask(0);
  assert_int_equal(sp_identity_save(a, path), 0);
  umask(old);
  assert_int_equal(stat(path, &st), 0);
  assert_true(S_ISREG(st.st_mode));
  assert_int_equal(st.st_mode & 07777, 0600);

  read_file(path, text, sizeof(text), &len);
  assert_int_equal(len, 216);
  snprintf(line, sizeof(line), "sync_protocol device key v1\ndevice %s\n",
           sp_uuid_format(sp_identity_device_id(a), uuid));
  assert_memory_equal(text, line, strlen(line));

  assert_int_equal(sp_identity_load(&b, path, NULL), 0);
  assert_true(sp_uuid_equal(sp_identity_device_id(a),
                            sp_identity_device_id(b)));
  sp_identity_public_key(a, pa);
  sp_identity_public_key(b, pb);
  assert_memory_equal(pa, pb, SP_PUBLIC_KEY_LEN);
  sp_identity_secret_seed(a, sa);
  sp_identity_secret_seed(b, sb);
  assert_memory_equal(sa, sb, SP_SECRET_SEED_LEN);
  sp_identity_del(a);
  sp_identity_del(b);
  unlink(path);
}

static void test_save_refuses_overwrite(void **state) {
  char path[300], link[300], before[1024], after[1024];
  sp_identity *a, *b;
  size_t n1, n2;
  struct stat st;

  (void)state;
  path_of(path, sizeof(path), "once.key");
  assert_int_equal(sp_identity_generate(&a, NULL, NULL), 0);
  assert_int_equal(sp_identity_generate(&b, NULL, NULL), 0);
  assert_int_equal(sp_identity_save(a, path), 0);
  read_file(path, before, sizeof(before), &n1);
  assert_int_equal(sp_identity_save(b, path), SP_ERR_EXISTS);
  read_file(path, after, sizeof(after), &n2);
  assert_int_equal(n1, n2);
  assert_memory_equal(before, after, n1);

  /* A dangling symlink is not followed to create its target. */
  path_of(link, sizeof(link), "dangling.key");
  path_of(path, sizeof(path), "target-not-created");
  assert_int_equal(symlink(path, link), 0);
  assert_int_equal(sp_identity_save(a, link), SP_ERR_EXISTS);
  assert_int_not_equal(lstat(path, &st), 0);
  unlink(link);

  /* Missing directory: an I/O error with errno set. */
  path_of(path, sizeof(path), "no/such/dir.key");
  errno = 0;
  assert_int_equal(sp_identity_save(a, path), SP_ERR_IO);
  assert_int_equal(errno, ENOENT);
  assert_int_equal(sp_identity_save(NULL, path), SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_identity_save(a, NULL), SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_identity_save(a, ""), SP_ERR_INVALID_ARGUMENT);
  sp_identity_del(a);
  sp_identity_del(b);
  path_of(path, sizeof(path), "once.key");
  unlink(path);
}

static void test_load_refuses_permissions(void **state) {
  static const mode_t modes[] = {0644, 0640, 0604, 0660, 0606, 0601, 0610,
                                 0620, 0602, 0700 | 0004};
  char path[300], link[300], text[1024];
  sp_identity *a, *b = NULL;
  size_t i, len;

  (void)state;
  path_of(path, sizeof(path), "perm.key");
  assert_int_equal(sp_identity_generate(&a, NULL, NULL), 0);
  assert_int_equal(sp_identity_save(a, path), 0);
  read_file(path, text, sizeof(text), &len);
  for (i = 0; i < sizeof(modes) / sizeof(modes[0]); ++i) {
    assert_int_equal(chmod(path, modes[i]), 0);
    assert_int_equal(sp_identity_load(&b, path, NULL),
                     SP_ERR_KEYFILE_PERMISSIONS);
    assert_null(b);
  }
  /* Owner-only modes are fine, including read-only. */
  assert_int_equal(chmod(path, 0400), 0);
  assert_int_equal(sp_identity_load(&b, path, NULL), 0);
  sp_identity_del(b);
  b = NULL;
  assert_int_equal(chmod(path, 0600), 0);

  /* A symlink to a good key file is refused: we check what we open. */
  path_of(link, sizeof(link), "perm-link.key");
  assert_int_equal(symlink(path, link), 0);
  assert_int_equal(sp_identity_load(&b, link, NULL),
                   SP_ERR_KEYFILE_PERMISSIONS);
  unlink(link);
  /* A directory and a FIFO are not regular files. */
  assert_int_equal(sp_identity_load(&b, tmpdir, NULL),
                   SP_ERR_KEYFILE_PERMISSIONS);
  path_of(link, sizeof(link), "fifo.key");
  assert_int_equal(mkfifo(link, 0600), 0);
  assert_int_equal(sp_identity_load(&b, link, NULL),
                   SP_ERR_KEYFILE_PERMISSIONS);
  unlink(link);
  assert_null(b);
  sp_identity_del(a);
  unlink(path);
}

static void test_load_missing(void **state) {
  char path[300];
  sp_identity *b = NULL;

  (void)state;
  path_of(path, sizeof(path), "missing.key");
  errno = 0;
  assert_int_equal(sp_identity_load(&b, path, NULL), SP_ERR_IO);
  assert_int_equal(errno, ENOENT);
  assert_null(b);
  assert_int_equal(sp_identity_load(NULL, path, NULL),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_identity_load(&b, NULL, NULL), SP_ERR_INVALID_ARGUMENT);
}

/* Apply `edit` to a valid key file text and expect a format refusal. */
typedef struct bad_case {
  const char *what;
  /* Replace `len` bytes at `off` (from the start, -1: at the end) with
   * `with`. */
  long off;
  size_t len;
  const char *with;
} bad_case;

static void test_load_refuses_malformed(void **state) {
  /* Offsets into the 216-byte file: line 2 starts at 28, line 3 at 72,
   * line 4 at 144; values start 7 bytes after their line. */
  static const bad_case cases[] = {
      {"empty file", 0, 216, ""},
      {"wrong magic", 0, 1, "S"},
      {"other version", 26, 1, "2"},
      {"magic only", 28, 188, ""},
      {"device tag", 28, 6, "Device"},
      {"device not hex", 35, 1, "g"},
      {"device upper case", 35, 1, "A"},
      {"device dash moved", 43, 1, "0"},
      {"device too short", 70, 1, ""},
      {"nil device", 35, 36, "00000000-0000-0000-0000-000000000000"},
      {"public tag", 72, 7, "publik "},
      {"public not hex", 79, 1, "z"},
      {"public upper case", 79, 1, "A"},
      {"public too short", 142, 1, ""},
      {"public too long", 142, 0, "0"},
      {"public mismatch", 79, 1, "?"},
      {"secret tag", 144, 7, "seed   "},
      {"secret not hex", 151, 1, "x"},
      {"secret too short", 214, 1, ""},
      {"no final newline", 215, 1, ""},
      {"crlf line ends", 27, 1, "\r\n"},
      {"space before value", 35, 0, " "},
      {"trailing line", -1, 0, "extra\n"},
      {"trailing newline", -1, 0, "\n"},
      {"nul byte", 100, 1, "\0"},
  };
  char path[300], good[216], text[4096];
  sp_identity *a, *b = NULL;
  size_t i, len;

  (void)state;
  path_of(path, sizeof(path), "bad.key");
  assert_int_equal(sp_identity_generate(&a, NULL, NULL), 0);
  assert_int_equal(sp_identity_save(a, path), 0);
  read_file(path, good, sizeof(good), &len);
  assert_int_equal(len, sizeof(good));

  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
    const bad_case *c = &cases[i];
    size_t off = c->off < 0 ? sizeof(good) : (size_t)c->off;
    size_t wlen = strlen(c->with);

    if (strcmp(c->what, "nul byte") == 0) {
      wlen = 1;
    }
    memcpy(text, good, off);
    memcpy(text + off, c->with, wlen);
    memcpy(text + off + wlen, good + off + c->len,
           sizeof(good) - off - c->len);
    len = sizeof(good) - c->len + wlen;
    if (strcmp(c->what, "public mismatch") == 0) {
      /* A valid hex digit that differs from the original one. */
      text[79] = good[79] == '0' ? '1' : '0';
    }
    write_file(path, text, len, 0600);
    if (sp_identity_load(&b, path, NULL) != SP_ERR_KEYFILE_FORMAT) {
      fail_msg("case '%s' not refused", c->what);
    }
    assert_null(b);
  }
  /* Very long file (stops reading at the limit). */
  memset(text, 'a', sizeof(text));
  write_file(path, text, sizeof(text), 0600);
  assert_int_equal(sp_identity_load(&b, path, NULL), SP_ERR_KEYFILE_FORMAT);
  /* And the unmodified text still loads (the harness above is sound). */
  write_file(path, good, sizeof(good), 0600);
  assert_int_equal(sp_identity_load(&b, path, NULL), 0);
  sp_identity_del(b);
  sp_identity_del(a);
  unlink(path);
}

static void test_fingerprint(void **state) {
  uint8_t key[SP_PUBLIC_KEY_LEN], h[32];
  char fp[SP_FINGERPRINT_LEN + 1], want[SP_FINGERPRINT_LEN + 1];
  size_t i, k;

  (void)state;
  for (i = 0; i < sizeof(key); ++i) {
    key[i] = (uint8_t)i;
  }
  memset(fp, 'x', sizeof(fp));
  assert_int_equal(sp_identity_fingerprint(key, fp, sizeof(fp)), 0);
  assert_int_equal(strlen(fp), SP_FINGERPRINT_LEN);
  assert_memory_equal(fp, "sp1:", 4);
  /* Independently: BLAKE2b-256, first 20 bytes, groups of two bytes. */
  crypto_generichash(h, sizeof(h), key, sizeof(key), NULL, 0);
  k = (size_t)sprintf(want, "sp1:");
  for (i = 0; i < 20; i += 2) {
    k += (size_t)sprintf(want + k, "%s%02x%02x", i ? ":" : "", h[i],
                         h[i + 1]);
  }
  assert_string_equal(fp, want);
  for (i = 4; i < SP_FINGERPRINT_LEN; ++i) {
    if ((i - 4) % 5 == 4) {
      assert_int_equal(fp[i], ':');
    } else {
      assert_true((fp[i] >= '0' && fp[i] <= '9') ||
                  (fp[i] >= 'a' && fp[i] <= 'f'));
    }
  }
  /* A different key, a different fingerprint. */
  key[0] ^= 1;
  assert_int_equal(sp_identity_fingerprint(key, want, sizeof(want)), 0);
  assert_string_not_equal(fp, want);
  assert_int_equal(sp_identity_fingerprint(key, fp, SP_FINGERPRINT_LEN),
                   SP_ERR_NOBUF);
  assert_int_equal(sp_identity_fingerprint(NULL, fp, sizeof(fp)),
                   SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_identity_fingerprint(key, NULL, sizeof(fp)),
                   SP_ERR_INVALID_ARGUMENT);
}

static void test_public_key_text(void **state) {
  uint8_t key[SP_PUBLIC_KEY_LEN], back[SP_PUBLIC_KEY_LEN];
  char text[2 * SP_PUBLIC_KEY_LEN + 1], upper[2 * SP_PUBLIC_KEY_LEN + 1];
  size_t i;

  (void)state;
  for (i = 0; i < sizeof(key); ++i) {
    key[i] = (uint8_t)(0xa0 + i);
  }
  sp_public_key_format(key, text);
  assert_int_equal(strlen(text), 64);
  assert_memory_equal(text, "a0a1a2a3", 8);
  assert_int_equal(sp_public_key_parse(back, text), 0);
  assert_memory_equal(key, back, sizeof(key));
  for (i = 0; i <= 64; ++i) {
    upper[i] = (text[i] >= 'a' && text[i] <= 'f') ? (char)(text[i] - 32)
                                                  : text[i];
  }
  memset(back, 0, sizeof(back));
  assert_int_equal(sp_public_key_parse(back, upper), 0);
  assert_memory_equal(key, back, sizeof(key));

  memset(back, 0x55, sizeof(back));
  text[10] = 'g';
  assert_int_equal(sp_public_key_parse(back, text), SP_ERR_INVALID_ARGUMENT);
  text[10] = 'a';
  text[63] = '\0';
  assert_int_equal(sp_public_key_parse(back, text), SP_ERR_INVALID_ARGUMENT);
  assert_int_equal(sp_public_key_parse(back, NULL), SP_ERR_INVALID_ARGUMENT);
  /* Untouched on error. */
  for (i = 0; i < sizeof(back); ++i) {
    assert_int_equal(back[i], 0x55);
  }
}

/* Generate, save and load through a failing allocator. */
static int alloc_body(const sp_mem *mem, void *arg) {
  const char *path = arg;
  sp_identity *a = NULL, *b = NULL;
  int rv;

  unlink(path);
  rv = sp_identity_generate(&a, NULL, mem);
  if (rv != 0) {
    return rv;
  }
  rv = sp_identity_save(a, path);
  if (rv == 0) {
    rv = sp_identity_load(&b, path, mem);
  }
  if (rv == 0 && !sp_uuid_equal(sp_identity_device_id(a),
                                sp_identity_device_id(b))) {
    rv = SP_ERR_INTERNAL;
  }
  sp_identity_del(a);
  sp_identity_del(b);
  unlink(path);
  return rv;
}

static void test_alloc_failures(void **state) {
  char path[300];
  long runs;

  (void)state;
  path_of(path, sizeof(path), "alloc.key");
  runs = sp_test_mem_fail_each(alloc_body, path, NULL);
  /* generate and load allocate one object each. */
  assert_int_equal(runs, 3);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_generate),
      cmocka_unit_test(test_key_pair_consistent),
      cmocka_unit_test(test_save_load_round_trip),
      cmocka_unit_test(test_save_refuses_overwrite),
      cmocka_unit_test(test_load_refuses_permissions),
      cmocka_unit_test(test_load_missing),
      cmocka_unit_test(test_load_refuses_malformed),
      cmocka_unit_test(test_fingerprint),
      cmocka_unit_test(test_public_key_text),
      cmocka_unit_test(test_alloc_failures),
  };
  return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
