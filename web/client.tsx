/**
 * The browser entry: hydrates every element marked `data-island` with its component and props.
 * Bundled by web/build.ts; the server pages contain no other script.
 */
import { h, hydrate } from "preact";
import { ISLANDS } from "./islands/mod.ts";

for (const el of document.querySelectorAll<HTMLElement>("[data-island]")) {
  const component = ISLANDS[el.dataset.island ?? ""];
  if (!component) {
    console.error(`wharf: no island named ${el.dataset.island}`);
    continue;
  }
  const props = JSON.parse(el.dataset.props ?? "{}");
  hydrate(h(component, props), el);
  el.dataset.hydrated = "true";
}
