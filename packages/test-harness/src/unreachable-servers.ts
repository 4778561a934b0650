// Peers that are there and yet reach nothing, for the tests of configs that fail: a port that accepts TCP and
// never sends a byte (a handshake that never comes, a black-holed security group), and a MySQL server that offers
// TLS with a certificate nobody trusts. Loopback only; `close()` destroys every socket.
import { type AddressInfo, createServer, type Server, type Socket } from "node:net";
import { TLSSocket } from "node:tls";
import { createSelfSignedCertificate } from "./tls-certificate.ts";

export interface LoopbackServer {
	readonly host: string;
	readonly port: number;
	/** TCP connections accepted so far. */
	readonly connections: number;
	close(): Promise<void>;
}

const listen = async (onSocket: (socket: Socket) => void): Promise<LoopbackServer> => {
	const sockets = new Set<Socket>();
	let connections = 0;
	const server: Server = createServer((socket) => {
		connections++;
		sockets.add(socket);
		socket.on("error", () => {});
		socket.on("close", () => sockets.delete(socket));
		onSocket(socket);
	});
	await new Promise<void>((resolve, reject) => {
		server.once("error", reject);
		server.listen(0, "127.0.0.1", resolve);
	});
	const { port } = server.address() as AddressInfo;
	let closing: Promise<void> | undefined;
	return {
		host: "127.0.0.1",
		port,
		get connections() {
			return connections;
		},
		close() {
			closing ??= new Promise<void>((resolve) => {
				for (const socket of sockets) socket.destroy();
				server.close(() => resolve());
			});
			return closing;
		},
	};
};

/** Accepts TCP connections and never sends a byte: no MySQL greeting, no TLS handshake, no HTTP response. */
export const startSilentServer = (): Promise<LoopbackServer> => listen(() => {});

const packet = (sequence: number, payload: Buffer): Buffer => {
	const header = Buffer.alloc(4);
	header.writeUIntLE(payload.length, 0, 3);
	header.writeUInt8(sequence, 3);
	return Buffer.concat([header, payload]);
};

// Capability flags of the greeting: protocol 4.1, secure connection, plugin auth, transactions, and SSL.
const CLIENT_LONG_PASSWORD = 0x1;
const CLIENT_CONNECT_WITH_DB = 0x8;
const CLIENT_PROTOCOL_41 = 0x200;
const CLIENT_SSL = 0x800;
const CLIENT_TRANSACTIONS = 0x2000;
const CLIENT_SECURE_CONNECTION = 0x8000;
const CLIENT_PLUGIN_AUTH = 0x80000;

/** A MySQL protocol v10 greeting that offers TLS (or not). */
const greeting = (offerTls: boolean): Buffer => {
	const capabilities =
		CLIENT_LONG_PASSWORD |
		CLIENT_CONNECT_WITH_DB |
		CLIENT_PROTOCOL_41 |
		(offerTls ? CLIENT_SSL : 0) |
		CLIENT_TRANSACTIONS |
		CLIENT_SECURE_CONNECTION |
		CLIENT_PLUGIN_AUTH;
	const scramble = Buffer.from("0123456789abcdefghij");
	const fixed = Buffer.alloc(4 + 8 + 1 + 2 + 1 + 2 + 2 + 1 + 10);
	let offset = 0;
	offset = fixed.writeUInt32LE(7, offset); // connection id
	offset += scramble.copy(fixed, offset, 0, 8);
	offset = fixed.writeUInt8(0, offset);
	offset = fixed.writeUInt16LE(capabilities & 0xffff, offset);
	offset = fixed.writeUInt8(0xff, offset); // utf8mb4
	offset = fixed.writeUInt16LE(0x0002, offset); // autocommit
	offset = fixed.writeUInt16LE(capabilities >>> 16, offset);
	fixed.writeUInt8(21, offset);
	return packet(
		0,
		Buffer.concat([
			Buffer.from([0x0a]),
			Buffer.from("8.0.36-impostor\0"),
			fixed,
			scramble.subarray(8, 20),
			Buffer.from("\0mysql_native_password\0"),
		]),
	);
};

/** ER_ACCESS_DENIED_ERROR (1045, SQLSTATE 28000), as a server answers bad credentials. */
const accessDenied = (sequence: number): Buffer => {
	const message = Buffer.from("Access denied for user (using password: YES)");
	const head = Buffer.alloc(3);
	head.writeUInt8(0xff, 0);
	head.writeUInt16LE(1045, 1);
	return packet(sequence, Buffer.concat([head, Buffer.from("#28000"), message]));
};

export interface MysqlTlsServer extends LoopbackServer {
	/** The server's certificate (PEM): trust it with `ssl: { ca }`. */
	readonly ca: string;
	/** TLS handshakes that completed (a client that verified and trusted the certificate). */
	readonly tlsHandshakes: number;
}

/**
 * Speaks just enough of the MySQL protocol to offer TLS with a self-signed certificate: the greeting (with
 * CLIENT_SSL), the switch to TLS after the client's SSL request, and then ER_ACCESS_DENIED_ERROR to whatever
 * login comes over it. A client that verifies certificates fails the handshake unless it was given `ca`; one that
 * trusts it gets as far as the login. With `offerTls: false` it is a server without TLS.
 */
export const startMysqlTlsServer = async (options: { offerTls?: boolean } = {}): Promise<MysqlTlsServer> => {
	const certificate = await createSelfSignedCertificate();
	const offerTls = options.offerTls ?? true;
	let tlsHandshakes = 0;
	const server = await listen((socket) => {
		socket.write(greeting(offerTls));
		socket.once("data", (first: Buffer) => {
			// A 32-byte SSL request (sequence 1): the rest of the conversation is TLS.
			if (!offerTls || first.length < 4 + 32) {
				socket.write(accessDenied(2));
				socket.end();
				return;
			}
			// The client's TLS hello may have come in the same chunk: it is the TLS socket's to read.
			socket.pause();
			if (first.length > 4 + 32) socket.unshift(first.subarray(4 + 32));
			const secure = new TLSSocket(socket, { isServer: true, key: certificate.key, cert: certificate.cert });
			secure.on("error", () => socket.destroy());
			secure.once("secure", () => {
				tlsHandshakes++;
			});
			secure.once("data", () => {
				secure.write(accessDenied(3));
				secure.end();
			});
		});
	});
	return Object.defineProperties(server, {
		ca: { value: certificate.cert, enumerable: true },
		tlsHandshakes: { get: () => tlsHandshakes, enumerable: true },
	}) as MysqlTlsServer;
};
