export { renderNginxConf, renderConf, confShape, GENERATION_PATH, type Desired } from "./nginx-conf.js";
export type { RenderOptions, Rendered, RenderedFile } from "./options.js";
export {
  bindRoutes,
  bindServers,
  rebindRoutes,
  serverSplice,
  spliceRoutes,
  type BoundRoute,
  type ServerSplice,
  type UpstreamMember,
} from "./bind-routes.js";
export { endpointSets } from "./dynamic.js";
export { routeTable, spliceRouteTable, serverKey, serverKeys, isRoutesDynamic, isTlsRouted } from "./routes-dynamic.js";
