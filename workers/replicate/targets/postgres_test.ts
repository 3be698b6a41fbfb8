import { CreateBucketCommand } from "@aws-sdk/client-s3";
import { LOCAL_S3_CREDENTIALS } from "../../../shared/stack/s3.ts";
import { createTestDatabase, testBucketName, testEnv } from "../../../shared/testing/mod.ts";
import { s3Client } from "../s3.ts";
import { targetConformance } from "./conformance.ts";
import { qualified } from "./merge_sql.ts";
import { PostgresTarget } from "./postgres.ts";

targetConformance("postgres", async () => {
  const db = await createTestDatabase();
  const s3 = s3Client({
    endpoint: testEnv.s3Endpoint,
    region: "us-east-1",
    forcePathStyle: true,
    ...LOCAL_S3_CREDENTIALS,
  });
  const bucket = testBucketName("conf");
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  const target = new PostgresTarget(db.url, s3);
  return {
    target,
    s3,
    bucket,
    rows: async (t) =>
      (await target.sql.unsafe(`select id::text, v, big from ${qualified(t.schema, t.name)} order by id`))
        .map((r) => [r.id, r.v, r.big]),
    dispose: async () => {
      await target.close();
      await db.drop();
      s3.destroy();
    },
  };
});
