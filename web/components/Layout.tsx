import type { ComponentChildren } from "preact";

/** The console's page frame: head, navigation and the islands script (only when the page has islands). */
export function Layout(
  { title, children, islandsSrc }: { title: string; children: ComponentChildren; islandsSrc?: string },
) {
  return (
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <title>{`${title} · wharf`}</title>
        <link rel="stylesheet" href="/static/console.css" />
      </head>
      <body>
        <header class="top">
          <a class="brand" href="/">wharf</a>
          <nav>
            <a href="/">Overview</a>
          </nav>
        </header>
        <main>{children}</main>
        {islandsSrc && <script type="module" src={islandsSrc} />}
      </body>
    </html>
  );
}
