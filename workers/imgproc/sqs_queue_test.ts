import assert from "node:assert/strict";
import { createLogger } from "../../shared/log.ts";
import { settle } from "./consumer.ts";
import { PoisonMessageError } from "./events.ts";
import { resolveQueueUrl, type SqsLike, SqsQueue } from "./sqs_queue.ts";

/** Records every command sent and answers ReceiveMessage from a list. */
function fakeSqs(messages: unknown[] = []) {
  const sent: { name: string; input: Record<string, unknown> }[] = [];
  const client: SqsLike = {
    send(command: { constructor: { name: string }; input: Record<string, unknown> }) {
      const name = command.constructor.name;
      sent.push({ name, input: command.input });
      if (name === "ReceiveMessageCommand") return Promise.resolve({ Messages: messages.splice(0) });
      if (name === "GetQueueUrlCommand") {
        return Promise.resolve({ QueueUrl: `https://sqs.example/1/${command.input.QueueName}` });
      }
      if (name === "GetQueueAttributesCommand") {
        return Promise.resolve({ Attributes: { ApproximateNumberOfMessages: "7" } });
      }
      return Promise.resolve({});
    },
  };
  return { client, sent };
}

const log = createLogger("test", { level: "error" });
const Q = "https://sqs.example/1/media";

Deno.test("SqsQueue long-polls with the receive count and maps messages", async () => {
  const { client, sent } = fakeSqs([
    { ReceiptHandle: "h1", Body: "{}", Attributes: { ApproximateReceiveCount: "3" } },
    { Body: "no handle, skipped" },
  ]);
  const q = new SqsQueue({ client, queueUrl: Q });
  const got = await q.receive(50, 30_000, new AbortController().signal);
  assert.deepEqual(got, [{ handle: "h1", body: "{}", receiveCount: 3 }]);
  assert.equal(sent[0].input.MaxNumberOfMessages, 10);
  assert.equal(sent[0].input.WaitTimeSeconds, 20);
  assert.deepEqual(sent[0].input.MessageSystemAttributeNames, ["ApproximateReceiveCount"]);
  assert.equal(await q.depth(), 7);
});

Deno.test("SqsQueue acks by deleting, retries by visibility, dead-letters to the DLQ then deletes", async () => {
  const { client, sent } = fakeSqs();
  const q = new SqsQueue({ client, queueUrl: Q, deadLetterUrl: "https://sqs.example/1/dlq" });
  const m = { handle: "h", body: '{"Records":[]}', receiveCount: 1 };
  await q.ack(m);
  await q.retry(m, 2_500);
  await q.deadLetter(m, "boom");
  assert.deepEqual(sent.map((s) => s.name), [
    "DeleteMessageCommand",
    "ChangeMessageVisibilityCommand",
    "SendMessageCommand",
    "DeleteMessageCommand",
  ]);
  assert.equal(sent[1].input.VisibilityTimeout, 3);
  assert.equal(sent[2].input.QueueUrl, "https://sqs.example/1/dlq");
  assert.equal(sent[2].input.MessageBody, m.body);
});

Deno.test("SqsQueue without a DLQ leaves a dead message to the queue's redrive policy", async () => {
  const { client, sent } = fakeSqs();
  const q = new SqsQueue({ client, queueUrl: Q });
  await q.deadLetter({ handle: "h", body: "x", receiveCount: 9 }, "boom");
  assert.deepEqual(sent.map((s) => s.name), ["ChangeMessageVisibilityCommand"]);
  assert.equal(sent[0].input.VisibilityTimeout, 43_200);
});

Deno.test("resolveQueueUrl looks a name up and keeps a URL", async () => {
  const { client, sent } = fakeSqs();
  assert.equal(await resolveQueueUrl(client, Q), Q);
  assert.equal(sent.length, 0);
  assert.equal(await resolveQueueUrl(client, "media-events"), "https://sqs.example/1/media-events");
});

Deno.test("the consumer acks success, retries a failure, and dead-letters poison at once and failures at max attempts", async () => {
  const { client, sent } = fakeSqs();
  const queue = new SqsQueue({ client, queueUrl: Q, deadLetterUrl: "https://sqs.example/1/dlq" });
  const dead: string[] = [];
  const status = { handled: 0, retried: 0, dead: 0, inFlight: 0 };
  const opts = (handle: (b: string) => Promise<void>) => ({
    queue,
    handle,
    onDead: (b: string) => Promise.resolve(void dead.push(b)),
    concurrency: 1,
    maxAttempts: 3,
    log,
    signal: new AbortController().signal,
  });
  const ok = () => Promise.resolve();
  const fail = () => Promise.reject(new Error("S3 unavailable"));
  const poison = () => Promise.reject(new PoisonMessageError("not JSON"));
  assert.equal(await settle(opts(ok), { handle: "a", body: "a", receiveCount: 1 }, status), "ack");
  assert.equal(await settle(opts(fail), { handle: "b", body: "b", receiveCount: 1 }, status), "retry");
  assert.equal(await settle(opts(fail), { handle: "c", body: "c", receiveCount: 3 }, status), "dead");
  assert.equal(await settle(opts(poison), { handle: "d", body: "d", receiveCount: 1 }, status), "dead");
  assert.deepEqual(dead, ["c", "d"]);
  assert.deepEqual(status, { handled: 1, retried: 1, dead: 2, inFlight: 0 });
  assert.deepEqual(sent.map((s) => s.name), [
    "DeleteMessageCommand",
    "ChangeMessageVisibilityCommand",
    "SendMessageCommand",
    "DeleteMessageCommand",
    "SendMessageCommand",
    "DeleteMessageCommand",
  ]);
});
