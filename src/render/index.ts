export { renderNginxConf, GENERATION_PATH, type Desired } from "./nginx-conf.js";
export type { RenderOptions, Rendered, RenderedFile } from "./options.js";
export { planRoutes, type RoutePlan, type UpstreamMember } from "./plan-routes.js";
