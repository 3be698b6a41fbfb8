import type { ComponentChildren } from "preact";

/** One entry of the console's navigation. */
export interface NavItem {
  href: string;
  title: string;
}

/** Props of {@linkcode Layout}. */
export interface LayoutProps {
  title: string;
  children: ComponentChildren;
  /** The islands script; given only when the page has islands. */
  islandsSrc?: string;
  /** The console's pages (from the page registry); none on the login page. */
  nav?: NavItem[];
  /** The href of the current page, marked in the navigation. */
  active?: string;
  /** The logged-in admin, shown with a logout button. */
  admin?: string;
  /** The session's CSRF token: in a meta tag for the islands' fetches and in the logout form. */
  csrf?: string;
}

/** The console's page frame: head, navigation, who is logged in, and the islands script. */
export function Layout({ title, children, islandsSrc, nav, active, admin, csrf }: LayoutProps) {
  return (
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        {csrf && <meta name="csrf-token" content={csrf} />}
        <title>{`${title} · wharf`}</title>
        <link rel="icon" href="data:," />
        <link rel="stylesheet" href="/static/console.css" />
        {islandsSrc && <link rel="stylesheet" href="/static/build/uPlot.min.css" />}
      </head>
      <body>
        <header class="top">
          <a class="brand" href="/console">wharf</a>
          {nav && (
            <nav aria-label="Console">
              {nav.map((n) => (
                <a href={n.href} aria-current={n.href === active ? "page" : undefined}>{n.title}</a>
              ))}
            </nav>
          )}
          {admin && (
            <form class="who" method="post" action="/console/logout">
              <span class="muted">{admin}</span>
              <input type="hidden" name="_csrf" value={csrf} />
              <button type="submit" class="link" data-testid="logout">Log out</button>
            </form>
          )}
        </header>
        <main>{children}</main>
        {islandsSrc && <script type="module" src={islandsSrc} />}
      </body>
    </html>
  );
}
