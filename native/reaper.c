// waitpid(pid, WNOHANG) for Node: as pid 1 in a container, nginx-lb inherits orphaned processes (e.g. the workers of
// a killed nginx master) and must reap them, which Node itself never does for processes it did not spawn.
#include <errno.h>
#include <node_api.h>
#include <sys/types.h>
#include <sys/wait.h>

// reap(pid): pid when a zombie was reaped, 0 when the child still runs, -1 when pid is not a child of ours.
static napi_value Reap(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t pid = 0;
  napi_value result;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int32(env, argv[0], &pid) != napi_ok || pid <= 1) {
    napi_create_int32(env, -1, &result);
    return result;
  }
  int status = 0;
  pid_t r;
  do {
    r = waitpid((pid_t)pid, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  napi_create_int32(env, r < 0 ? -1 : (int32_t)r, &result);
  return result;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "reap", NAPI_AUTO_LENGTH, Reap, NULL, &fn);
  napi_set_named_property(env, exports, "reap", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
