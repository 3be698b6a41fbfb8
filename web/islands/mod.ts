/**
 * The registry of islands: the only components whose code is shipped to the browser. The client entry
 * looks an island up here by the name the server wrote in `data-island`.
 */
import type { ComponentType } from "preact";
import { ApiAction } from "./ApiAction.tsx";
import { ApiForm } from "./ApiForm.tsx";
import { EventLog } from "./EventLog.tsx";
import { FunctionEditor } from "./FunctionEditor.tsx";
import { HealthCheck } from "./HealthCheck.tsx";
import { TestRun } from "./TestRun.tsx";
import { TimeSeriesChart } from "./TimeSeriesChart.tsx";
import { WorkersLive } from "./WorkersLive.tsx";

/** Every island by name. */
// deno-lint-ignore no-explicit-any
export const ISLANDS: Record<string, ComponentType<any>> = {
  ApiAction,
  ApiForm,
  EventLog,
  FunctionEditor,
  HealthCheck,
  TestRun,
  TimeSeriesChart,
  WorkersLive,
};
