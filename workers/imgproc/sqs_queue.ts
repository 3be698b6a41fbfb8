/**
 * The AWS queue: the media bucket's S3 notifications arrive on an SQS queue. Long polls (up to 20 s),
 * deletes on ack, changes the visibility on retry (SQS redelivers after it), and on dead-letter sends the
 * body to the dead-letter queue when one is configured, then deletes. Without one, the message is left
 * to the queue's own redrive policy (visible again after a long timeout, moved by SQS after
 * maxReceiveCount).
 */
import {
  ChangeMessageVisibilityCommand,
  DeleteMessageCommand,
  GetQueueAttributesCommand,
  GetQueueUrlCommand,
  ReceiveMessageCommand,
  SendMessageCommand,
  SQSClient,
} from "@aws-sdk/client-sqs";
import type { MessageQueue, QueueMessage } from "./queue.ts";

/** The part of `SQSClient` used here, so tests can hand in a recording fake. */
export interface SqsLike {
  // deno-lint-ignore no-explicit-any
  send(command: any, options?: { abortSignal?: AbortSignal }): Promise<any>;
}

/** Options for {@linkcode SqsQueue}. */
export interface SqsQueueOptions {
  client: SqsLike;
  queueUrl: string;
  deadLetterUrl?: string;
  /** Visibility while a message is worked on, in seconds (default: the queue's own). */
  visibilityS?: number;
}

/** SQS allows visibility timeouts up to 12 hours. */
const MAX_VISIBILITY_S = 43_200;

/** Resolves a queue name to its URL (a URL is returned as it is). */
export async function resolveQueueUrl(client: SqsLike, nameOrUrl: string): Promise<string> {
  if (/^https?:\/\//.test(nameOrUrl)) return nameOrUrl;
  const r = await client.send(new GetQueueUrlCommand({ QueueName: nameOrUrl }));
  if (!r.QueueUrl) throw new Error(`Cannot find the SQS queue ${nameOrUrl}`);
  return r.QueueUrl as string;
}

/** Creates an SQS client for `region`, with the SDK's default credential chain. */
export function createSqsClient(
  region: string,
  endpoint?: string,
  credentials?: { accessKeyId: string; secretAccessKey: string },
): SQSClient {
  return new SQSClient({
    region,
    ...(endpoint ? { endpoint } : {}),
    ...(credentials ? { credentials } : {}),
  });
}

/** The SQS implementation of {@linkcode MessageQueue}. */
export class SqsQueue implements MessageQueue {
  readonly #o: SqsQueueOptions;
  constructor(o: SqsQueueOptions) {
    this.#o = o;
  }

  async receive(max: number, waitMs: number, signal: AbortSignal): Promise<QueueMessage[]> {
    if (signal.aborted) return [];
    try {
      const r = await this.#o.client.send(
        new ReceiveMessageCommand({
          QueueUrl: this.#o.queueUrl,
          MaxNumberOfMessages: Math.max(1, Math.min(10, max)),
          WaitTimeSeconds: Math.max(0, Math.min(20, Math.ceil(waitMs / 1000))),
          MessageSystemAttributeNames: ["ApproximateReceiveCount"],
          ...(this.#o.visibilityS ? { VisibilityTimeout: this.#o.visibilityS } : {}),
        }),
        { abortSignal: signal },
      );
      return ((r.Messages ?? []) as {
        ReceiptHandle?: string;
        Body?: string;
        Attributes?: Record<string, string>;
      }[])
        .filter((m) => m.ReceiptHandle)
        .map((m) => ({
          handle: m.ReceiptHandle!,
          body: m.Body ?? "",
          receiveCount: Number(m.Attributes?.ApproximateReceiveCount ?? 1) || 1,
        }));
    } catch (e) {
      if (signal.aborted) return [];
      throw e;
    }
  }

  async ack(m: QueueMessage): Promise<void> {
    await this.#o.client.send(
      new DeleteMessageCommand({ QueueUrl: this.#o.queueUrl, ReceiptHandle: m.handle }),
    );
  }

  async retry(m: QueueMessage, delayMs: number): Promise<void> {
    await this.#o.client.send(
      new ChangeMessageVisibilityCommand({
        QueueUrl: this.#o.queueUrl,
        ReceiptHandle: m.handle,
        VisibilityTimeout: Math.min(MAX_VISIBILITY_S, Math.ceil(delayMs / 1000)),
      }),
    );
  }

  async deadLetter(m: QueueMessage, error: string): Promise<void> {
    if (!this.#o.deadLetterUrl) {
      // Left for the queue's redrive policy: hidden as long as SQS allows, then counted again.
      await this.retry(m, MAX_VISIBILITY_S * 1000);
      return;
    }
    await this.#o.client.send(
      new SendMessageCommand({
        QueueUrl: this.#o.deadLetterUrl,
        MessageBody: m.body,
        MessageAttributes: { error: { DataType: "String", StringValue: error.slice(0, 1000) } },
      }),
    );
    await this.ack(m);
  }

  async depth(): Promise<number> {
    const r = await this.#o.client.send(
      new GetQueueAttributesCommand({
        QueueUrl: this.#o.queueUrl,
        AttributeNames: ["ApproximateNumberOfMessages"],
      }),
    );
    return Number(r.Attributes?.ApproximateNumberOfMessages ?? 0);
  }

  async close(): Promise<void> {}
}
