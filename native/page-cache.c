/*
 * raftmq's one native function: posix_fadvise(POSIX_FADV_DONTNEED) over a byte range of an open
 * file, which Node.js has no binding for. The CommitLog calls it on ranges it has synced and no
 * longer expects to read soon, so that their page-cache pages are freed and taken again by the
 * next writes (docs/storage.md, "Page cache"). Built by native/build.js; optional at run time.
 *
 * dropCache(fd, offset, length) -> 0, or the errno posix_fadvise returned.
 * Throws a TypeError unless given three integers.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <node_api.h>

/* Reads argv[i] as a whole number in [0, max]; false for anything else (1.5, NaN, -1, "3"). */
static int whole_arg(napi_env env, napi_value value, double max, double *out) {
  double d;
  if (napi_get_value_double(env, value, &d) != napi_ok) return 0;
  if (!(d >= 0 && d <= max) || d != (double)(int64_t)d) return 0;
  *out = d;
  return 1;
}

static napi_value drop_cache(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  double fd, offset, length;
  const double safe_max = 9007199254740991.0; /* 2^53 - 1 */
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 3 ||
      !whole_arg(env, argv[0], 2147483647.0, &fd) || !whole_arg(env, argv[1], safe_max, &offset) ||
      !whole_arg(env, argv[2], safe_max, &length)) {
    napi_throw_type_error(env, NULL,
                          "dropCache(fd, offset, length) takes three non-negative integers");
    return NULL;
  }
  int rc = posix_fadvise((int)fd, (off_t)offset, (off_t)length, POSIX_FADV_DONTNEED);
  napi_value result;
  if (napi_create_int32(env, rc, &result) != napi_ok) return NULL;
  return result;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "dropCache", NAPI_AUTO_LENGTH, drop_cache, NULL, &fn) != napi_ok ||
      napi_set_named_property(env, exports, "dropCache", fn) != napi_ok) {
    return NULL;
  }
  return exports;
}
