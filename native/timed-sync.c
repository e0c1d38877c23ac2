/*
 * fdatasync and fsync on the libuv thread pool, as fs.fdatasync and fs.fsync do them, but timed
 * where they happen: the CommitLog counts how long its sync rounds take from hand-off to
 * completion on the event loop, and that time holds the system call, the wait for a pool thread
 * and the wait for the loop. Only the thread that makes the call can tell the first from the
 * other two, so the call is made here. Built by native/build.js; optional at run time
 * (src/store/timed-sync.ts).
 *
 * fdatasync(fd, callback) and fsync(fd, callback) (for a directory, whose new entries fdatasync
 * need not cover) queue the call and return undefined. callback(errno, callMs) runs on the loop:
 * errno 0 or the call's errno, and the time of the system call in ms, from entry to return on
 * the pool thread (the device, and on a busy machine that thread's wait to run again once the
 * device answered). What is left of a round's time, from the hand-off to the callback, is the
 * wait for a pool thread and for the loop. Both throw a TypeError unless given a file
 * descriptor and a function.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <node_api.h>

typedef struct {
  napi_async_work work;
  napi_ref callback;
  int fd;
  /* fsync instead of fdatasync. */
  int full;
  int err;
  int64_t call_start_ns;
  int64_t call_end_ns;
} sync_job;

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* On a pool thread: no JavaScript, no N-API calls. */
static void execute(napi_env env, void *data) {
  (void)env;
  sync_job *job = data;
  job->call_start_ns = now_ns();
  int rc;
  do {
    rc = job->full ? fsync(job->fd) : fdatasync(job->fd);
  } while (rc != 0 && errno == EINTR);
  job->err = rc == 0 ? 0 : errno;
  job->call_end_ns = now_ns();
}

static void free_job(napi_env env, sync_job *job) {
  if (job->callback != NULL) napi_delete_reference(env, job->callback);
  if (job->work != NULL) napi_delete_async_work(env, job->work);
  free(job);
}

/* On the loop. A cancelled job (the environment is shutting down) calls nothing. */
static void complete(napi_env env, napi_status status, void *data) {
  sync_job *job = data;
  napi_value callback, global, argv[2];
  double call_ms = (double)(job->call_end_ns - job->call_start_ns) / 1e6;
  if (status == napi_ok && napi_get_reference_value(env, job->callback, &callback) == napi_ok &&
      callback != NULL && napi_get_global(env, &global) == napi_ok &&
      napi_create_int32(env, job->err, &argv[0]) == napi_ok &&
      napi_create_double(env, call_ms, &argv[1]) == napi_ok) {
    free_job(env, job);
    /* A throw from the callback becomes the process's uncaught exception, as for fs callbacks. */
    napi_call_function(env, global, callback, 2, argv, NULL);
    return;
  }
  free_job(env, job);
}

static napi_value queue_sync(napi_env env, napi_callback_info info, int full) {
  size_t argc = 2;
  napi_value argv[2];
  double fd;
  napi_valuetype type;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2 ||
      napi_get_value_double(env, argv[0], &fd) != napi_ok || !(fd >= 0 && fd <= 2147483647.0) ||
      fd != (double)(int32_t)fd || napi_typeof(env, argv[1], &type) != napi_ok ||
      type != napi_function) {
    napi_throw_type_error(env, NULL,
                          full ? "fsync(fd, callback) takes a file descriptor and a function"
                               : "fdatasync(fd, callback) takes a file descriptor and a function");
    return NULL;
  }
  sync_job *job = calloc(1, sizeof(sync_job));
  napi_value name;
  if (job == NULL) {
    napi_throw_error(env, NULL, "timed sync: out of memory");
    return NULL;
  }
  job->fd = (int)fd;
  job->full = full;
  if (napi_create_reference(env, argv[1], 1, &job->callback) != napi_ok ||
      napi_create_string_utf8(env, "raftmq.timed-sync", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, execute, complete, job, &job->work) != napi_ok) {
    free_job(env, job);
    napi_throw_error(env, NULL, "timed sync: could not queue the call");
    return NULL;
  }
  if (napi_queue_async_work(env, job->work) != napi_ok) {
    free_job(env, job);
    napi_throw_error(env, NULL, "timed sync: could not queue the call");
    return NULL;
  }
  return NULL;
}

static napi_value timed_fdatasync(napi_env env, napi_callback_info info) {
  return queue_sync(env, info, 0);
}

static napi_value timed_fsync(napi_env env, napi_callback_info info) {
  return queue_sync(env, info, 1);
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "fdatasync", NAPI_AUTO_LENGTH, timed_fdatasync, NULL, &fn) !=
          napi_ok ||
      napi_set_named_property(env, exports, "fdatasync", fn) != napi_ok ||
      napi_create_function(env, "fsync", NAPI_AUTO_LENGTH, timed_fsync, NULL, &fn) != napi_ok ||
      napi_set_named_property(env, exports, "fsync", fn) != napi_ok) {
    return NULL;
  }
  return exports;
}
