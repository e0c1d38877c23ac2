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
#include <node_api.h>

static napi_value drop_cache(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int32_t fd;
  int64_t offset;
  int64_t length;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 3 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_int64(env, argv[1], &offset) != napi_ok ||
      napi_get_value_int64(env, argv[2], &length) != napi_ok || fd < 0 || offset < 0 ||
      length < 0) {
    napi_throw_type_error(env, NULL,
                          "dropCache(fd, offset, length) takes three non-negative integers");
    return NULL;
  }
  int rc = posix_fadvise(fd, (off_t)offset, (off_t)length, POSIX_FADV_DONTNEED);
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
