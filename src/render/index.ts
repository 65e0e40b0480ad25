export { renderNginxConf, renderConf, confShape, GENERATION_PATH, type Desired } from "./nginx-conf.js";
export type { RenderOptions, Rendered, RenderedFile } from "./options.js";
export { bindRoutes, bindServers, rebindRoutes, type BoundRoute, type UpstreamMember } from "./bind-routes.js";
export { endpointSets } from "./dynamic.js";
export { routeTable, serverKey, isRoutesDynamic, isTlsRouted } from "./routes-dynamic.js";
