// Creates a user from the sample avatar, follows WatchUser until the thumbnails are READY
// (or FAILED) and prints them: the README's grpcurl walk-through, from Node.
// Usage: npm start [-- image-path]   (ACCOUNTS_URL defaults to http://localhost:50051)
import { readFile } from "node:fs/promises";
import { randomUUID } from "node:crypto";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { AccountsService, ThumbnailStatus } from "./gen/accounts/v1/accounts_pb.js";

const baseUrl = process.env.ACCOUNTS_URL ?? "http://localhost:50051";
const image = process.argv[2] ?? new URL("../../docs/sample-avatar.jpg", import.meta.url);
// Plain-text HTTP/2 for http://; for https:// pass nodeOptions: { ca, cert, key } here.
const client = createClient(AccountsService, createGrpcTransport({ baseUrl }));

const created = await client.createUser(
  {
    email: `ada-${randomUUID().slice(0, 8)}@example.com`,
    displayName: "Ada Lovelace",
    avatar: { case: "avatarImage", value: await readFile(image) },
  },
  { timeoutMs: 10_000 },
);
console.log(`created ${created.id}: ${ThumbnailStatus[created.thumbnailStatus]}`);

// WatchUser sends the current state, then every change, until the client hangs up: leaving
// the loop alone does not end the call, aborting its signal does. (A timeoutMs here would keep
// Node alive until it ran out even after the abort; AbortSignal.timeout does not.)
const hangUp = new AbortController();
const signal = AbortSignal.any([hangUp.signal, AbortSignal.timeout(60_000)]);
let last = created;
try {
  for await (const user of client.watchUser({ id: created.id }, { signal })) {
    last = user;
    console.log(`watch: ${ThumbnailStatus[user.thumbnailStatus]}`);
    if (user.thumbnailStatus !== ThumbnailStatus.PENDING) break;
  }
} finally {
  hangUp.abort();
}
if (last.thumbnailStatus !== ThumbnailStatus.READY) {
  console.error(`not READY: ${last.failureCode} ${last.failureReason}`);
  process.exit(1);
}
for (const name of ["small", "medium", "large"]) {
  const t = last.thumbnails?.[name];
  console.log(`${name}: ${t?.width}x${t?.height}, ${t?.sizeBytes} bytes, ${t?.url}`);
}
