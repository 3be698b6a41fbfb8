/**
 * The queue imgproc consumes, as an interface: SQS on AWS ({@link ./sqs_queue.ts}), a Postgres table
 * locally ({@link ./pg_queue.ts}) fed by the local S3 server's events. The consumer
 * ({@link ./consumer.ts}) is the same code for both.
 */

/** One message: an S3 event notification body (`{"Records":[…]}`) and how often it was received. */
export interface QueueMessage {
  /** The queue's handle for ack/retry (an SQS receipt handle, a row id). */
  handle: string;
  body: string;
  /** 1 on the first delivery. */
  receiveCount: number;
}

/** What the consumer needs of a queue. */
export interface MessageQueue {
  /** Up to `max` messages, waiting up to `waitMs` when none is there; [] when `signal` aborts. */
  receive(max: number, waitMs: number, signal: AbortSignal): Promise<QueueMessage[]>;
  /** Done: the message is removed. */
  ack(m: QueueMessage): Promise<void>;
  /** Failed for now: deliver again after `delayMs`. */
  retry(m: QueueMessage, delayMs: number, error: string): Promise<void>;
  /** Failed for good: moved aside (dead-letter queue, or a dead row) for an operator to look at. */
  deadLetter(m: QueueMessage, error: string): Promise<void>;
  /** Messages waiting (approximate where the queue only knows that much). */
  depth(): Promise<number>;
  close(): Promise<void>;
}
