// The HTTPS peer, in its own process: the server's event loop and GC must not run inside the process that
// times the clients (on a 2-core machine that would charge server work to whichever contender ran last).
// Started by peers.ts with an IPC channel; exits when the parent disconnects, whatever happened to it.
import { startHttpServer } from "@middy-conn/test-harness";

type Message = { type: "stats" } | { type: "close" };

const server = await startHttpServer({ tls: true, keepAliveTimeout: 60_000 });

// `received` keeps every request for the tests; over a benchmark run it would grow the peer without bound and
// make its GC pauses longer and longer (a drift that is not the clients').
setInterval(() => {
	server.received.length = 0;
}, 1000).unref();

const send = (message: unknown) => process.send?.(message);

process.on("message", (message: Message) => {
	if (message.type === "stats") {
		const { connections, tlsHandshakes, requests } = server.stats;
		send({ type: "stats", connections, tlsHandshakes, requests });
	} else if (message.type === "close") {
		void server.close().finally(() => process.exit(0));
	}
});
process.on("disconnect", () => {
	void server.close().finally(() => process.exit(0));
});

send({ type: "ready", origin: server.origin, ca: server.ca });
