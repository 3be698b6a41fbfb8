import assert from "node:assert/strict";
import { GetObjectCommand, HeadObjectCommand } from "@aws-sdk/client-s3";
import { SignJWT } from "jose";
import sharp from "sharp";
import { testEnv } from "../../shared/testing/mod.ts";
import { createApp } from "../../web/app.tsx";
import { eventually, feedWorld, jpeg, TEST_JWT_SECRET, uploadForm } from "./_util.ts";

const b64url = (o: unknown) =>
  btoa(JSON.stringify(o)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

Deno.test("users register, log in by username or email, read me, and refresh tokens rotate with reuse revoking the family", async () => {
  await using w = await feedWorld();
  const reg = await w.request("/api/users", {
    method: "POST",
    json: { email: "Ann@Example.com", username: "ann", password: "correct horse battery" },
  });
  assert.equal(reg.status, 201);
  const ann = await reg.json();
  assert.equal(ann.email, "ann@example.com");
  assert.equal(ann.password, undefined);
  const [row] = await w.db.sql`select password from app.users where username = 'ann'`;
  assert.match(row.password, /^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);

  const dup = await w.request("/api/users", {
    method: "POST",
    json: { email: "ann@example.com", username: "ann2", password: "correct horse battery" },
  });
  assert.equal(dup.status, 409);
  const bad = await w.request("/api/users", {
    method: "POST",
    json: { email: "nope", username: "x", password: "1" },
  });
  assert.equal(bad.status, 400);
  assert.equal((await bad.json()).error.code, "validation_failed");

  const byEmail = await w.request("/api/users/login", {
    method: "POST",
    json: { email: "ANN@example.com", password: "correct horse battery" },
  });
  assert.equal(byEmail.status, 200);
  const t1 = await byEmail.json();
  assert.equal(t1.token_type, "Bearer");
  assert.equal(t1.expires_in, 900);
  const wrong = await w.request("/api/users/login", {
    method: "POST",
    json: { username: "ann", password: "nope" },
  });
  assert.equal(wrong.status, 401);

  const me = await w.request("/api/users/me", { token: t1.access_token });
  assert.equal(me.status, 200);
  assert.equal((await me.json()).username, "ann");

  const r1 = await w.request("/api/users/refresh", {
    method: "POST",
    json: { refresh_token: t1.refresh_token },
  });
  assert.equal(r1.status, 200);
  const t2 = await r1.json();
  assert.notEqual(t2.refresh_token, t1.refresh_token);
  // The first token was used up: showing it again revokes the family, the second token included.
  const reuse = await w.request("/api/users/refresh", {
    method: "POST",
    json: { refresh_token: t1.refresh_token },
  });
  assert.equal(reuse.status, 401);
  const after = await w.request("/api/users/refresh", {
    method: "POST",
    json: { refresh_token: t2.refresh_token },
  });
  assert.equal(after.status, 401);
  const [stored] = await w.db.sql`select count(*)::int as n from app.refresh_tokens where revoked_at is null`;
  assert.equal(stored.n, 0);
});

Deno.test("a disabled user cannot log in, refresh or use an access token", async () => {
  await using w = await feedWorld();
  const bob = await w.user("bob");
  await w.db.sql`update app.users set disabled_at = now() where id = ${bob.id}`;
  assert.equal((await w.request("/api/users/me", { token: bob.access })).status, 401);
  const login = await w.request("/api/users/login", {
    method: "POST",
    json: { username: "bob", password: "pw-bob-long-enough" },
  });
  assert.equal(login.status, 401);
  const refresh = await w.request("/api/users/refresh", {
    method: "POST",
    json: { refresh_token: bob.refresh },
  });
  assert.equal(refresh.status, 401);
});

Deno.test("alg none, tampered, wrongly signed, wrong audience and expired tokens get 401", async () => {
  await using w = await feedWorld();
  const cat = await w.user("cat");
  const [h, p, s] = cat.access.split(".");
  const payload = JSON.parse(atob(p.replace(/-/g, "+").replace(/_/g, "/")));
  const none = `${b64url({ alg: "none", typ: "JWT" })}.${b64url(payload)}.`;
  const tampered = `${h}.${b64url({ ...payload, sub: "999" })}.${s}`;
  const key = new TextEncoder().encode(TEST_JWT_SECRET);
  const other = await new SignJWT(payload).setProtectedHeader({ alg: "HS256" })
    .sign(new TextEncoder().encode("another-secret-another-secret-0000"));
  const audience = await new SignJWT({ ...payload, aud: "elsewhere" }).setProtectedHeader({ alg: "HS256" })
    .sign(key);
  const expired = await new SignJWT({ ...payload, iat: 1_000, exp: 2_000 }).setProtectedHeader({
    alg: "HS256",
  })
    .sign(key);
  for (const [name, token] of Object.entries({ none, tampered, other, audience, expired })) {
    const r = await w.request("/api/users/me", { token });
    assert.equal(r.status, 401, name);
  }
  const r = await w.request("/api/users/me", { token: expired });
  assert.equal((await r.json()).error.code, "token_expired");
  assert.equal((await w.request("/api/users/me")).status, 401);
  assert.equal((await w.request("/api/users/me", { token: cat.access })).status, 200);
});

Deno.test("login attempts are rate-limited in Redis per client and name", async () => {
  await using w = await feedWorld({ env: { FEED_LOGIN_MAX_ATTEMPTS: "2" } });
  await w.user("dan");
  const attempt = (password: string) =>
    w.request("/api/users/login", { method: "POST", json: { username: "dan", password } });
  for (let i = 0; i < 2; i++) assert.equal((await attempt("wrong password")).status, 401);
  const limited = await attempt("pw-dan-long-enough");
  assert.equal(limited.status, 429);
  const body = await limited.json();
  assert.equal(body.error.code, "rate_limited");
  assert.ok(body.error.details.retry_after_s > 0);
  const keys = await w.deps.redis.keys(`${w.cfg.FEED_REDIS_PREFIX}login*`);
  assert.equal(keys.length, 2, "one counter per name, one per client");
  // Many names from one client hit the looser per-client limit (2 × 10 attempts).
  let status = 0;
  for (let i = 0; i < 20 && status !== 429; i++) {
    const r = await w.request("/api/users/login", {
      method: "POST",
      json: { username: `nobody${i}`, password: "x" },
    });
    status = r.status;
  }
  assert.equal(status, 429);
  // Registrations (an argon2 hash each) are limited per client too: dan was the first of two.
  const reg = (name: string) =>
    w.request("/api/users", {
      method: "POST",
      json: { email: `${name}@x.io`, username: name, password: "long enough pw" },
    });
  assert.equal((await reg("second")).status, 201);
  assert.equal((await reg("third")).status, 429);
});

Deno.test("feeds are created, listed with a stable cursor, read, patched and deleted by their owner only", async () => {
  await using w = await feedWorld();
  const eve = await w.user("eve");
  const fay = await w.user("fay");
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) {
    const r = await w.request("/api/feeds", {
      method: "POST",
      token: eve.access,
      body: uploadForm(await jpeg(40 + i, 30), `picture ${i}`),
    });
    assert.equal(r.status, 201, await r.clone().text());
    const f = await r.json();
    assert.equal(f.thumbnail_status, "pending");
    assert.equal(f.content_type, "image/jpeg");
    assert.equal(f.username, "eve");
    ids.push(f.id);
  }
  const p1 = await (await w.request("/api/feeds?limit=2")).json();
  assert.deepEqual(p1.items.map((f: { id: string }) => f.id), [ids[4], ids[3]]);
  // Adding and deleting between pages does not shift the next page.
  await w.request("/api/feeds", { method: "POST", token: fay.access, body: uploadForm(await jpeg(), "new") });
  assert.equal(
    (await w.request(`/api/feeds/${ids[4]}`, { method: "DELETE", token: eve.access })).status,
    204,
  );
  const p2 = await (await w.request(`/api/feeds?limit=2&cursor=${p1.next_cursor}`)).json();
  assert.deepEqual(p2.items.map((f: { id: string }) => f.id), [ids[2], ids[1]]);
  const p3 = await (await w.request(`/api/feeds?limit=2&cursor=${p2.next_cursor}`)).json();
  assert.deepEqual(p3.items.map((f: { id: string }) => f.id), [ids[0]]);
  assert.equal(p3.next_cursor, null);

  const one = await w.request(`/api/feeds/${ids[0]}`);
  assert.equal(one.status, 200);
  const feed = await one.json();
  const img = await fetch(feed.image_url);
  assert.equal(img.status, 200);
  assert.equal((await sharp(new Uint8Array(await img.arrayBuffer())).metadata()).width, 40);

  const patchOther = await w.request(`/api/feeds/${ids[0]}`, {
    method: "PATCH",
    token: fay.access,
    json: { caption: "mine now" },
  });
  assert.equal(patchOther.status, 403);
  const deleteOther = await w.request(`/api/feeds/${ids[0]}`, { method: "DELETE", token: fay.access });
  assert.equal(deleteOther.status, 403);
  const patch = await w.request(`/api/feeds/${ids[0]}`, {
    method: "PATCH",
    token: eve.access,
    json: { caption: "new" },
  });
  assert.equal(patch.status, 200);
  assert.equal((await patch.json()).caption, "new");
  const extra = await w.request(`/api/feeds/${ids[0]}`, {
    method: "PATCH",
    token: eve.access,
    json: { caption: "x", user_id: fay.id },
  });
  assert.equal(extra.status, 400);
  assert.equal((await w.request("/api/feeds/abc")).status, 400);
  assert.equal((await w.request("/api/feeds/999999")).status, 404);
  const noAuth = await w.request("/api/feeds", { method: "POST", body: uploadForm(await jpeg()) });
  assert.equal(noAuth.status, 401);

  const [media] = await w.db.sql`select media_key from app.feeds where id = ${ids[0]}`;
  const head = () =>
    w.s3.send(new HeadObjectCommand({ Bucket: w.cfg.FEED_MEDIA_BUCKET, Key: media.media_key }));
  await head();
  const deleted = await w.request(`/api/feeds/${ids[0]}`, { method: "DELETE", token: eve.access });
  assert.equal(deleted.status, 204);
  const [gone] = await w.db.sql`select count(*)::int as n from app.feeds where id = ${ids[0]}`;
  assert.equal(gone.n, 0);
  await assert.rejects(head());
});

Deno.test("bad input: a malformed cursor is 400, an oversize upload 413, a text file named .jpg 415", async () => {
  await using w = await feedWorld({ env: { FEED_MAX_UPLOAD_BYTES: "20000" } });
  const gus = await w.user("gus");
  for (const cursor of ["nope", "ZjphYmM", "%%%", btoa("f:-1")]) {
    const r = await w.request(`/api/feeds?cursor=${encodeURIComponent(cursor)}`);
    assert.equal(r.status, 400, cursor);
    assert.equal((await r.json()).error.code, "invalid_cursor");
  }
  assert.equal((await w.request("/api/feeds?limit=0")).status, 400);
  assert.equal((await w.request("/api/thumbnails?cursor=bad")).status, 400);

  const big = new Uint8Array(40_000);
  big.set([0xff, 0xd8, 0xff, 0xe0]);
  const over = await w.request("/api/feeds", { method: "POST", token: gus.access, body: uploadForm(big) });
  assert.equal(over.status, 413);
  const text = new TextEncoder().encode("just some text, honestly not a picture\n");
  const fake = await w.request("/api/feeds", {
    method: "POST",
    token: gus.access,
    body: uploadForm(text, "x", "cat.jpg"),
  });
  assert.equal(fake.status, 415);
  const json = await w.request("/api/feeds", {
    method: "POST",
    token: gus.access,
    json: { caption: "no file" },
  });
  assert.equal(json.status, 400);
  const [n] = await w.db.sql`select count(*)::int as n from app.feeds`;
  assert.equal(n.n, 0);
});

Deno.test("thumbnail round trip: upload, thumbnail appears (oriented, stripped, small), delete, thumbnail gone", async () => {
  await using w = await feedWorld({ imgproc: true });
  const hal = await w.user("hal");
  // 120x80 stored with EXIF orientation 6 (rotate 90°): the thumbnail must come out portrait.
  const created = await w.request("/api/feeds", {
    method: "POST",
    token: hal.access,
    body: uploadForm(await jpeg(120, 80, 6), "rotated"),
  });
  assert.equal(created.status, 201);
  const feed = await created.json();
  const pending = await w.request(`/api/feeds/${feed.id}/thumbnail`);
  if (pending.status === 404) assert.equal((await pending.json()).error.details.thumbnail_status, "pending");
  else await pending.body?.cancel();

  await eventually("the thumbnail", async () => {
    const [r] = await w.db.sql`select thumbnail_status from app.feeds where id = ${feed.id}`;
    return r.thumbnail_status === "ready" ? true : undefined;
  });
  const redirect = await w.request(`/api/feeds/${feed.id}/thumbnail`);
  assert.equal(redirect.status, 302);
  const thumb = await fetch(redirect.headers.get("location")!);
  assert.equal(thumb.status, 200);
  const bytes = new Uint8Array(await thumb.arrayBuffer());
  const meta = await sharp(bytes).metadata();
  assert.equal(meta.format, "jpeg");
  assert.ok(meta.height! > meta.width!, "EXIF orientation applied");
  assert.ok(Math.max(meta.width!, meta.height!) <= 64);
  assert.equal(meta.exif, undefined, "metadata stripped");
  assert.equal(meta.orientation, undefined);

  const list = await (await w.request("/api/thumbnails")).json();
  assert.equal(list.items.length, 1);
  assert.equal(list.items[0].feed_id, feed.id);

  const [row] = await w.db.sql`select media_key, thumbnail_key from app.feeds where id = ${feed.id}`;
  assert.equal(
    (await w.request(`/api/feeds/${feed.id}`, { method: "DELETE", token: hal.access })).status,
    204,
  );
  // The removal is applied (and recorded) in one transaction; wait for its record, then check the bucket.
  await eventually("the removal applied", async () => {
    const [st] = await w.db.sql`select event_name from control.imgproc_objects where key = ${row.media_key}`;
    return st?.event_name === "ObjectRemoved:Delete" ? true : undefined;
  });
  await assert.rejects(
    w.s3.send(new GetObjectCommand({ Bucket: w.cfg.FEED_THUMBNAILS_BUCKET, Key: row.thumbnail_key })),
    (e: Error) => e.name === "NoSuchKey",
  );
});

Deno.test("a decompression bomb marks its feed failed and imgproc keeps serving the next upload", async () => {
  await using w = await feedWorld({ imgproc: true, maxPixels: 1_000_000 });
  const ivy = await w.user("ivy");
  // 4000x4000 of one colour: a few kilobytes of PNG, 16 megapixels once decoded.
  const bomb = new Uint8Array(
    await sharp({ create: { width: 4000, height: 4000, channels: 3, background: "#000" } }).png({
      compressionLevel: 9,
    })
      .toBuffer(),
  );
  assert.ok(bomb.length < 100_000);
  const b = await (await w.request("/api/feeds", {
    method: "POST",
    token: ivy.access,
    body: uploadForm(bomb, "boom", "b.png"),
  }))
    .json();
  const ok = await (await w.request("/api/feeds", {
    method: "POST",
    token: ivy.access,
    body: uploadForm(await jpeg()),
  }))
    .json();
  await eventually("both feeds settled", async () => {
    const rows = await w.db
      .sql`select id::text, thumbnail_status, thumbnail_error from app.feeds order by id`;
    return rows.every((r) => r.thumbnail_status !== "pending") ? rows : undefined;
  });
  const got = await (await w.request(`/api/feeds/${b.id}`)).json();
  assert.equal(got.thumbnail_status, "failed");
  const thumb = await w.request(`/api/feeds/${b.id}/thumbnail`);
  assert.equal(thumb.status, 404);
  assert.equal((await thumb.json()).error.details.thumbnail_status, "failed");
  assert.equal((await (await w.request(`/api/feeds/${ok.id}`)).json()).thumbnail_status, "ready");
  const [err] = await w.db.sql`select thumbnail_error from app.feeds where id = ${b.id}`;
  assert.match(err.thumbnail_error, /over the limit/);
});

Deno.test("the OpenAPI document is generated from the schemas and the reference page lists every path", async () => {
  await using w = await feedWorld();
  const doc = await (await w.request("/api/openapi.json")).json();
  assert.equal(doc.openapi, "3.1.0");
  for (const p of ["/api/users", "/api/users/login", "/api/feeds", "/api/feeds/{id}", "/api/thumbnails"]) {
    assert.ok(doc.paths[p], p);
  }
  const reg = doc.components.schemas.RegisterBody;
  assert.deepEqual(reg.required.sort(), ["email", "password", "username"]);
  assert.equal(reg.properties.password.minLength, 10);
  assert.ok(doc.components.schemas.Feed.properties.thumbnail_status);
  const page = await w.request("/api/docs");
  assert.equal(page.status, 200);
  assert.match(await page.text(), /\/api\/feeds\/\{id\}\/thumbnail/);
});

Deno.test("a listed page is served from memory until any process changes a feed", async () => {
  await using w = await feedWorld();
  const kim = await w.user("kim");
  await w.request("/api/feeds", { method: "POST", token: kim.access, body: uploadForm(await jpeg(), "one") });
  const captions = async () =>
    (await (await w.request("/api/feeds?limit=5")).json()).items.map((f: { caption: string }) => f.caption);
  // The LISTEN is in place shortly after start; from then on a page is cached.
  await eventually("a cached page", async () => {
    await captions();
    return (await captions()).length === 1 ? true : undefined;
  });
  // Another process (here: plain SQL) changes the row: the NOTIFY drops the cached page.
  await w.db.sql`update app.feeds set caption = 'changed elsewhere'`;
  const seen = await eventually("the change", async () => {
    const c = await captions();
    return c[0] === "changed elsewhere" ? c : undefined;
  }, 2_000); // well under the cache's 5 s expiry: only the notification can explain the change
  assert.deepEqual(seen, ["changed elsewhere"]);
  await w.db.sql`delete from app.feeds`;
  await eventually("the deletion", async () => ((await captions()).length === 0 ? true : undefined), 2_000);
});

Deno.test("the web app mounts the feed API from the .env names, and leaves it out without a JWT secret", async () => {
  await using w = await feedWorld();
  const env = {
    DATABASE_URL: w.db.url,
    REDIS_URL: testEnv.redisUrl,
    S3_ENDPOINT: testEnv.s3Endpoint,
    AWS_MEDIA_BUCKET: w.cfg.FEED_MEDIA_BUCKET,
    AWS_THUMBNAILS_BUCKET: w.cfg.FEED_THUMBNAILS_BUCKET,
  };
  const off = createApp({ sql: w.db.sql, env });
  assert.equal((await off.request("/api/feeds")).status, 404);
  const on = createApp({ sql: w.db.sql, env: { ...env, JWT_SECRET: "x".repeat(40) } });
  const r = await on.request("/api/feeds");
  assert.equal(r.status, 200);
  assert.deepEqual(await r.json(), { items: [], next_cursor: null });
  assert.throws(
    () => createApp({ sql: w.db.sql, env: { ...env, JWT_SECRET: "short" } }),
    /JWT_SECRET|FEED_JWT_SECRET/,
  );
});

Deno.test("every $ref in the OpenAPI document resolves to a component", async () => {
  await using w = await feedWorld();
  const doc = await (await w.request("/api/openapi.json")).json();
  const refs = [...JSON.stringify(doc).matchAll(/"\$ref":"#\/components\/schemas\/([^"]+)"/g)].map((m) =>
    m[1]
  );
  assert.ok(refs.length > 10);
  for (const r of refs) assert.ok(doc.components.schemas[r], r);
  assert.equal(JSON.stringify(doc).includes('"$id"'), false);
});
