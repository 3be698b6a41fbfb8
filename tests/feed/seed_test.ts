import assert from "node:assert/strict";
import { COMPONENTS } from "../../shared/stack/components.ts";
import { LOCAL_S3_CREDENTIALS } from "../../shared/stack/s3.ts";
import { SEED_STEPS } from "../../shared/stack/seed.ts";
import { testEnv } from "../../shared/testing/mod.ts";
import { DEMO_PASSWORD, feedSeed } from "../../workers/imgproc/seed.ts";
import { eventually, feedWorld } from "./_util.ts";

Deno.test("the dev seed adds demo users and feeds once, and imgproc (a dev component) makes their thumbnails", async () => {
  assert.ok(SEED_STEPS.includes(feedSeed));
  assert.ok(COMPONENTS.some((c) => c.name === "imgproc" && c.entry === "workers/imgproc/main.ts"));
  await using w = await feedWorld({ imgproc: true });
  const env = {
    S3_ENDPOINT: testEnv.s3Endpoint,
    S3_ACCESS_KEY_ID: LOCAL_S3_CREDENTIALS.accessKeyId,
    S3_SECRET_ACCESS_KEY: LOCAL_S3_CREDENTIALS.secretAccessKey,
    AWS_MEDIA_BUCKET: w.cfg.FEED_MEDIA_BUCKET,
  };
  const said: string[] = [];
  await feedSeed.run({ sql: w.db.sql, env, say: (l) => said.push(l) });
  await feedSeed.run({ sql: w.db.sql, env, say: (l) => said.push(l) });
  const [n] = await w.db.sql`select count(*)::int as n from app.feeds`;
  assert.equal(n.n, 6);
  await eventually("six thumbnails", async () => {
    const [r] = await w.db.sql`select count(*)::int as n from app.feeds where thumbnail_status = 'ready'`;
    return r.n === 6 ? true : undefined;
  });
  const login = await w.request("/api/users/login", {
    method: "POST",
    json: { username: "alice", password: DEMO_PASSWORD },
  });
  assert.equal(login.status, 200);
  const page = await (await w.request("/api/thumbnails?limit=10")).json();
  assert.equal(page.items.length, 6);
});
