import { Island } from "../../components/Island.tsx";
import { ago, bytes, stamp } from "../../components/format.ts";
import { ApiAction } from "../../islands/ApiAction.tsx";
import { feedListQuery, listFeeds, listFeedUsers } from "../api/admin/feed.ts";
import type { ConsolePage } from "./page.ts";

/**
 * The image feed: users (search, disable / enable) and feeds (newest first, of everyone or one user,
 * delete). Reads `app.users` and `app.feeds`; changes go through `/api/admin/feed`, so they are audited.
 */
export const feedPage: ConsolePage = {
  href: "/console/feed",
  title: "Feed",
  routes(r, kit) {
    r.get("/feed", async (c) => {
      const sql = kit.sql();
      const raw = c.req.query();
      const parsed = (() => {
        try {
          return { q: feedListQuery({ q: raw.q || "", ...(raw.user ? { user: raw.user } : {}) }) };
        } catch {
          return { q: feedListQuery({}), bad: true };
        }
      })();
      const q = parsed.q;
      const [users, feeds] = await Promise.all([
        listFeedUsers(sql, { ...q, user: undefined }),
        listFeeds(sql, q),
      ]);
      const of = q.user
        ? (await sql`select username from app.users where id = ${q.user}`)[0]?.username
        : undefined;
      return kit.render(c, {
        title: "Feed",
        active: "/console/feed",
        body: (
          <>
            <h1>Feed</h1>
            <form class="filters card" method="get" action="/console/feed">
              <label class="field">
                <span>User name or email contains</span>
                <input name="q" value={q.q ?? ""} placeholder="alice" />
              </label>
              {q.user && <input type="hidden" name="user" value={q.user} />}
              <div class="actions">
                <button type="submit">Search</button>
                <a href="/console/feed">Clear</a>
              </div>
              {parsed.bad && <p class="error" role="alert">The filter was not understood and is ignored.</p>}
            </form>
            <section class="card">
              <h2>Users</h2>
              {users.length
                ? (
                  <div class="table-wrap">
                    <table data-testid="feed-users">
                      <thead>
                        <tr>
                          <th>User</th>
                          <th>Email</th>
                          <th>Feeds</th>
                          <th>State</th>
                          <th>Joined</th>
                          <th></th>
                        </tr>
                      </thead>
                      <tbody>
                        {users.map((u) => (
                          <tr data-user={u.username} data-disabled={u.disabled_at ? "true" : "false"}>
                            <td data-label="User">{u.username}</td>
                            <td data-label="Email" class="small">{u.email}</td>
                            <td data-label="Feeds">
                              <a href={`/console/feed?user=${u.id}`}>{u.feeds}</a>
                            </td>
                            <td data-label="State">
                              <span class={`badge ${u.disabled_at ? "dead" : "ok"}`}>
                                {u.disabled_at ? "disabled" : "active"}
                              </span>
                            </td>
                            <td data-label="Joined" title={stamp(u.created_at)}>{ago(u.created_at)}</td>
                            <td class="actions">
                              {u.disabled_at
                                ? (
                                  <Island
                                    component={ApiAction}
                                    props={{
                                      label: "Enable",
                                      method: "POST",
                                      url: `/api/admin/feed/users/${u.id}/enable`,
                                      variant: "quiet",
                                      testid: `enable-${u.username}`,
                                    }}
                                  />
                                )
                                : (
                                  <Island
                                    component={ApiAction}
                                    props={{
                                      label: "Disable",
                                      method: "POST",
                                      url: `/api/admin/feed/users/${u.id}/disable`,
                                      confirm:
                                        `Disable ${u.username}? They can no longer log in, and their sessions end.`,
                                      variant: "danger",
                                      testid: `disable-${u.username}`,
                                    }}
                                  />
                                )}
                            </td>
                          </tr>
                        ))}
                      </tbody>
                    </table>
                  </div>
                )
                : (
                  <p class="empty">
                    {q.q ? `No user name or email contains “${q.q}”.` : "No user has signed up yet."}
                  </p>
                )}
            </section>
            <section class="card">
              <h2>
                {of ? <>Feeds of {of}</> : "Feeds"}
                {q.user && (
                  <>
                    {" "}
                    <a class="small" href="/console/feed">all</a>
                  </>
                )}
              </h2>
              {feeds.length
                ? (
                  <div class="table-wrap">
                    <table data-testid="feeds">
                      <thead>
                        <tr>
                          <th>Id</th>
                          <th>User</th>
                          <th>Caption</th>
                          <th>Image</th>
                          <th>Thumbnail</th>
                          <th>Posted</th>
                          <th></th>
                        </tr>
                      </thead>
                      <tbody>
                        {feeds.map((f) => (
                          <tr data-feed={f.id}>
                            <td data-label="Id">{f.id}</td>
                            <td data-label="User">
                              <a href={`/console/feed?user=${f.user_id}`}>{f.username}</a>
                            </td>
                            <td data-label="Caption">{f.caption || <span class="muted">none</span>}</td>
                            <td data-label="Image" class="small">{f.content_type}, {bytes(f.size_bytes)}</td>
                            <td data-label="Thumbnail">
                              <span
                                class={`badge ${
                                  f.thumbnail_status === "ready"
                                    ? "ok"
                                    : f.thumbnail_status === "failed"
                                    ? "dead"
                                    : "pending"
                                }`}
                              >
                                {f.thumbnail_status}
                              </span>
                            </td>
                            <td data-label="Posted" title={stamp(f.created_at)}>{ago(f.created_at)}</td>
                            <td class="actions">
                              <Island
                                component={ApiAction}
                                props={{
                                  label: "Delete",
                                  method: "DELETE",
                                  url: `/api/admin/feed/feeds/${f.id}`,
                                  confirm: `Delete feed ${f.id} of ${f.username}? Its image goes too.`,
                                  variant: "danger",
                                  testid: `delete-feed-${f.id}`,
                                }}
                              />
                            </td>
                          </tr>
                        ))}
                      </tbody>
                    </table>
                  </div>
                )
                : <p class="empty">{of ? `${of} has posted nothing.` : "Nobody has posted a feed yet."}</p>}
            </section>
          </>
        ),
      });
    });
  },
};
