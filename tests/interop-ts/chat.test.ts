// The TypeScript section of docs/clients.md, executed: a Node client built from proto/chat.proto
// alone (@grpc/grpc-js, @grpc/proto-loader, types from proto-loader-gen-types) registers, logs
// in, subscribes, sends and receives against a real `confab serve`, and reads the refusals the
// way docs/clients.md says (status codes, RetryInfo). Run by scripts/test.sh.

import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, test } from "node:test";
import assert from "node:assert/strict";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import type { ProtoGrpcType } from "./gen/chat.js";
import type { Event__Output } from "./gen/confab/v1/Event.js";
import type { LoginResponse__Output } from "./gen/confab/v1/LoginResponse.js";
import type { SendMessageResponse__Output } from "./gen/confab/v1/SendMessageResponse.js";

const BIN = process.env.CONFAB_BIN ?? "target/debug/confab";
const PROTO = process.env.CONFAB_PROTO ?? "proto/chat.proto";
const PASSWORD = "correct horse battery";
/** How long any awaited thing may take. */
const PATIENCE_MS = 10_000;

// The same options as the type generator, so the types match the objects.
const definition = protoLoader.loadSync(PROTO, {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const confab = (grpc.loadPackageDefinition(definition) as unknown as ProtoGrpcType).confab.v1;

let server: ChildProcess;
let dataDir: string;
let address: string;

/** `confab serve` on a free loopback port; resolves with the address it prints. */
before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), "confab-ts-"));
  server = spawn(
    BIN,
    ["serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--bench-fast-hash"],
    { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, RUST_LOG: "warn" } },
  );
  const lines = createInterface({ input: server.stdout! });
  address = await within("the server's listening line", new Promise<string>((ok, fail) => {
    lines.once("line", (line) => {
      const prefix = "confab listening on ";
      line.startsWith(prefix) ? ok(line.slice(prefix.length)) : fail(new Error(line));
    });
    server.once("exit", (code) => fail(new Error(`confab serve exited with ${code}`)));
  }));
});

after(() => {
  server?.kill("SIGKILL");
  rmSync(dataDir, { recursive: true, force: true });
});

function within<T>(what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>((_, fail) => {
    timer = setTimeout(() => fail(new Error(`no ${what} within ${PATIENCE_MS} ms`)), PATIENCE_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function unary<Res>(start: (cb: grpc.requestCallback<Res>) => void): Promise<Res> {
  return within("an answer", new Promise((ok, fail) => start((err, res) => (err ? fail(err) : ok(res!)))));
}

/** A logged-in user: its Chat client, the token's metadata and its event stream. */
class User {
  readonly events: Event__Output[] = [];
  private waiters: Array<() => void> = [];
  private stream?: grpc.ClientReadableStream<Event__Output>;

  private constructor(
    readonly name: string,
    readonly chat: InstanceType<typeof confab.Chat>,
    readonly md: grpc.Metadata,
  ) {}

  static async login(name: string): Promise<User> {
    const creds = grpc.credentials.createInsecure();
    const auth = new confab.Auth(address, creds);
    const login = await unary<LoginResponse__Output>((cb) =>
      auth.Login({ username: name, password: PASSWORD }, cb),
    );
    auth.close();
    assert.equal(login.username, name);
    assert.ok(login.token.length > 0);
    const md = new grpc.Metadata();
    md.set("authorization", `Bearer ${login.token}`);
    return new User(name, new confab.Chat(address, creds), md);
  }

  subscribe(): void {
    this.stream = this.chat.Subscribe({ resume_after: 0 }, this.md);
    this.stream.on("data", (event: Event__Output) => {
      this.events.push(event);
      this.waiters.splice(0).forEach((wake) => wake());
    });
    this.stream.on("error", () => {}); // cancelled at the end
  }

  /** Waits for the first event (from the start) that `pred` accepts. */
  async next(what: string, pred: (e: Event__Output) => boolean): Promise<Event__Output> {
    return within(
      `${this.name}: ${what}`,
      (async () => {
        for (;;) {
          const found = this.events.find(pred);
          if (found) return found;
          await new Promise<void>((wake) => this.waiters.push(wake));
        }
      })(),
    );
  }

  close(): void {
    this.stream?.cancel();
    this.chat.close();
  }
}

async function register(name: string): Promise<void> {
  const auth = new confab.Auth(address, grpc.credentials.createInsecure());
  const r = await unary<{ username: string }>((cb) =>
    auth.Register({ username: name, password: PASSWORD }, cb),
  );
  auth.close();
  assert.equal(r.username, name);
}

test("register, log in, subscribe, send and receive", async () => {
  await register("alice");
  await register("bob");
  const alice = await User.login("alice");
  const bob = await User.login("bob");
  bob.subscribe();
  await bob.next("the end of the (empty) backlog", (e) => e.kind === "backlog_end");

  const sent = await unary<SendMessageResponse__Output>((cb) =>
    alice.chat.SendMessage({ to: "bob", body: "hello from TypeScript", message_id: "ts-1" }, alice.md, cb),
  );
  assert.equal(sent.status, "DELIVERY_STATUS_DELIVERED");
  assert.equal(sent.duplicate, false);
  const got = await bob.next("alice's message", (e) => e.kind === "message");
  assert.equal(got.message!.from, "alice");
  assert.equal(got.message!.body, "hello from TypeScript");
  assert.equal(got.message!.message_id, "ts-1");
  // 64-bit numbers arrive as strings with `longs: String`.
  assert.equal(got.message!.seq, sent.seq);
  assert.equal(typeof got.message!.seq, "string");

  // The same message id again: the server drops the duplicate and says so.
  const again = await unary<SendMessageResponse__Output>((cb) =>
    alice.chat.SendMessage({ to: "bob", body: "hello from TypeScript", message_id: "ts-1" }, alice.md, cb),
  );
  assert.equal(again.duplicate, true);

  // Refusals carry the code and the server's sentence.
  await assert.rejects(
    unary((cb) => alice.chat.SendMessage({ to: "nobody", body: "x", message_id: "ts-2" }, alice.md, cb)),
    (err: grpc.ServiceError) => {
      assert.equal(err.code, grpc.status.NOT_FOUND);
      assert.match(err.details, /nobody/);
      return true;
    },
  );
  // Without the token: UNAUTHENTICATED.
  await assert.rejects(
    unary((cb) => alice.chat.ListOnline({}, new grpc.Metadata(), cb)),
    (err: grpc.ServiceError) => err.code === grpc.status.UNAUTHENTICATED,
  );

  // Acknowledged with a heartbeat: a fresh subscription replays nothing.
  await unary((cb) => bob.chat.Heartbeat({ ack_seq: got.message!.seq }, bob.md, cb));
  bob.close();
  const bobAgain = await User.login("bob");
  bobAgain.subscribe();
  await bobAgain.next("the end of the backlog", (e) => e.kind === "backlog_end");
  assert.equal(bobAgain.events.filter((e) => e.kind === "message").length, 0);
  bobAgain.close();
  alice.close();
});

/** docs/clients.md's program (copied out of the page by scripts/test.sh, compiled beside this
 * file), run with `env`; resolves with what it printed. */
function runRecipe(env: Record<string, string>): Promise<string> {
  return within(
    "the recipe to finish",
    new Promise((ok, fail) => {
      execFile(
        process.execPath,
        [join(__dirname, "recipe.mjs")],
        { env: { ...process.env, ...env }, timeout: PATIENCE_MS },
        (err, stdout, stderr) => (err ? fail(new Error(`${err.message}\n${stderr}`)) : ok(stdout)),
      );
    }),
  );
}

test("the program in docs/clients.md shows what waits, acknowledges it and sends", async () => {
  await register("carol");
  await register("dave");
  const dave = await User.login("dave");
  for (const body of ["one", "two"]) {
    await unary((cb) => dave.chat.SendMessage({ to: "carol", body, message_id: `d-${body}` }, dave.md, cb));
  }
  dave.subscribe();
  await dave.next("the end of the backlog", (e) => e.kind === "backlog_end");

  const printed = await runRecipe({
    CONFAB_SERVER: address,
    CONFAB_USER: "carol",
    CONFAB_PASSWORD: PASSWORD,
    CONFAB_TO: "dave",
    CONFAB_PROTO: PROTO,
  });
  assert.deepEqual(printed.trim().split("\n"), [
    "dave: one",
    "dave: two",
    "sent: DELIVERY_STATUS_DELIVERED",
  ]);
  const got = await dave.next("carol's message", (e) => e.kind === "message" && e.message!.from === "carol");
  assert.equal(got.message!.body, "hello from TypeScript");

  // It acknowledged what it showed: carol's inbox is empty now.
  const carol = await User.login("carol");
  carol.subscribe();
  await carol.next("the end of the backlog", (e) => e.kind === "backlog_end");
  assert.equal(carol.events.filter((e) => e.kind === "message").length, 0);
  carol.close();
  dave.close();
});
