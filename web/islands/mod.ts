/**
 * Every island the console ships, by name. The server marks where each is rendered; the client bundle
 * hydrates each mark with the component of the same name.
 */
import type { ComponentType } from "preact";
import { HealthCheck } from "./HealthCheck.tsx";

// deno-lint-ignore no-explicit-any
export const ISLANDS: Record<string, ComponentType<any>> = { HealthCheck };
