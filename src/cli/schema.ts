import { servicesJsonSchema } from "../model/schema.js";

/** `nginx-lb schema`: the JSON Schema of services.json on stdout. */
export function schemaCommand(): number {
  process.stdout.write(`${JSON.stringify(servicesJsonSchema(), null, 2)}\n`);
  return 0;
}
