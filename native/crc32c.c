/*
 * CRC32C (Castagnoli) with the CPU's crc32 instruction, for the checksums of stored records and
 * messages (src/common/crc32c.ts). The npm package the project otherwise uses computes the same
 * value; this one takes a range of a Uint8Array, so callers need no view per call, and costs
 * about half as much per call at 1 KiB (docs/performance.md). Built by native/build.js; optional
 * at run time, and without SSE4.2 (or off x86-64) it exports nothing and the package is used.
 *
 * crc32c(bytes, start, end, initial) -> the CRC32C of bytes[start..end), continuing from
 * `initial` (0 to start), as an unsigned 32-bit number. Throws a TypeError unless `bytes` is a
 * Uint8Array and the others are numbers, a RangeError unless they are whole numbers with
 * 0 <= start <= end <= bytes.length and 0 <= initial <= 0xffffffff (no wrapping, as Node-API's
 * uint32 conversion would do to -1 or 2^32 + k: a wrong range must fail, not checksum other bytes).
 */
#include <stdint.h>
#include <string.h>
#include <node_api.h>

#if defined(__x86_64__)
#include <nmmintrin.h>

__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(const uint8_t *p, size_t n,
                                                            uint32_t initial) {
  uint64_t crc = (uint32_t)~initial;
  while (n >= 8) {
    uint64_t word;
    memcpy(&word, p, 8); /* unaligned load */
    crc = _mm_crc32_u64(crc, word);
    p += 8;
    n -= 8;
  }
  uint32_t crc32 = (uint32_t)crc;
  while (n > 0) {
    crc32 = _mm_crc32_u8(crc32, *p);
    p += 1;
    n -= 1;
  }
  return ~crc32;
}

/* True when `d` is a whole number in [0, max] (false for NaN, infinities, fractions). */
static int whole(double d, double max) {
  return d >= 0 && d <= max && d == (double)(uint64_t)d;
}

static napi_value crc32c(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_typedarray_type type;
  size_t length;
  void *data;
  double start, end, initial;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 4 ||
      napi_get_typedarray_info(env, argv[0], &type, &length, &data, NULL, NULL) != napi_ok ||
      type != napi_uint8_array || napi_get_value_double(env, argv[1], &start) != napi_ok ||
      napi_get_value_double(env, argv[2], &end) != napi_ok ||
      napi_get_value_double(env, argv[3], &initial) != napi_ok) {
    napi_throw_type_error(env, NULL,
                          "crc32c(bytes, start, end, initial) takes a Uint8Array and three numbers");
    return NULL;
  }
  if (!whole(end, (double)length) || !whole(start, end) || !whole(initial, 4294967295.0)) {
    napi_throw_range_error(env, NULL,
                           "crc32c: needs whole numbers, 0 <= start <= end <= bytes.length and "
                           "0 <= initial <= 0xffffffff");
    return NULL;
  }
  napi_value result;
  if (napi_create_uint32(env,
                         crc32c_hw((const uint8_t *)data + (size_t)start,
                                   (size_t)end - (size_t)start, (uint32_t)initial),
                         &result) != napi_ok) {
    return NULL;
  }
  return result;
}
#endif

NAPI_MODULE_INIT() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("sse4.2")) {
    napi_value fn;
    if (napi_create_function(env, "crc32c", NAPI_AUTO_LENGTH, crc32c, NULL, &fn) != napi_ok ||
        napi_set_named_property(env, exports, "crc32c", fn) != napi_ok) {
      return NULL;
    }
  }
#endif
  return exports;
}
