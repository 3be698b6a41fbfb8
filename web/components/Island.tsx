import type { ComponentType } from "preact";
import { ISLANDS } from "../islands/mod.ts";

const NAMES = new Map<ComponentType<never>, string>(
  Object.entries(ISLANDS).map(([name, c]) => [c as ComponentType<never>, name]),
);

/**
 * Renders an island on the server inside a marked element that the client bundle hydrates. Props must
 * be JSON: they travel in the page.
 */
export function Island<P extends object>(
  { component, props }: { component: ComponentType<P>; props: NoInfer<P> },
) {
  const name = NAMES.get(component as ComponentType<never>);
  if (!name) throw new Error("Cannot render an island that is not listed in web/islands/mod.ts");
  const C = component as ComponentType<P>;
  return (
    <div data-island={name} data-props={JSON.stringify(props)}>
      <C {...props} />
    </div>
  );
}
