// The app's MongoDB: one MongoClient for the process, the collections it uses, and their indexes.
//
// Users and dispatched tasks live in the app's database (MONGO_DB); the
// nightly report is read from the workers' database (MONGO_WORKERS_DB), where
// the Celery workers write it. Express starts (and answers 503 on the routes
// that need data) while MongoDB is down, and connects on the next request.
import { MongoClient, MongoError, MongoNetworkError, MongoServerSelectionError } from 'mongodb';

/** A MongoDB outage or refusal that the request cannot work around: the route answers 503. */
export class DatabaseUnavailableError extends Error {
  constructor(message, { cause } = {}) {
    super(message, { cause });
    this.name = 'DatabaseUnavailableError';
  }
}

// Errors that mean "MongoDB is not reachable right now", as opposed to a bad query.
const OUTAGE_NAMES = new Set([
  'MongoNotConnectedError', 'MongoTopologyClosedError', 'MongoServerClosedError', 'MongoPoolClearedError',
  'MongoNetworkTimeoutError', 'MongoOperationTimeoutError',
]);

/** True when `err` says the database could not be reached (network, server selection, closed pool). */
export function isOutage(err) {
  return err instanceof DatabaseUnavailableError
    || err instanceof MongoNetworkError
    || err instanceof MongoServerSelectionError
    || (err instanceof MongoError && OUTAGE_NAMES.has(err.name));
}

/** MongoDB's duplicate-key error code (a unique index refused the write). */
export const DUPLICATE_KEY = 11000;

/** The indexes the app's queries need, created at start-up (idempotent: same keys, same options). */
export const INDEXES = Object.freeze({
  users: [
    { key: { username_lower: 1 }, unique: true },
  ],
  tasks: [
    // A user's list, newest first.
    { key: { owner: 1, created_at: -1 } },
    // The nightly report's day window and the archiving of old records.
    { key: { created_at: 1 } },
  ],
});

/**
 * Open the app's MongoDB handle. Nothing is awaited here: `ensureIndexes()`
 * connects and creates the indexes, and is retried until it succeeds.
 */
export function openDatabase({ url, dbName, workersDbName, timeoutMs = 3000, logger = console }) {
  const client = new MongoClient(url, {
    // Fail a request in seconds when MongoDB is away, rather than hang it.
    serverSelectionTimeoutMS: timeoutMs,
    connectTimeoutMS: timeoutMs,
    appName: 'celery-pushserver-express',
  });
  const db = client.db(dbName);
  const workersDb = client.db(workersDbName);
  let indexed = null; // the promise of the index creation that succeeded (or is running)
  let connected = false;

  // The driver's implicit connect closes the client for good when its first
  // attempt fails ("Topology is closed" ever after); an explicit connect() can
  // be retried. Once connected, the driver rides out later outages itself.
  async function connect() {
    if (connected) return;
    await client.connect();
    connected = true;
  }

  const database = {
    client,
    users: db.collection('users'),
    tasks: db.collection('tasks'),
    reports: workersDb.collection('reports'),

    /** Create the indexes (once successfully; a failed attempt is retried by the next call). */
    ensureIndexes() {
      if (!indexed) {
        indexed = (async () => {
          await connect();
          for (const [name, specs] of Object.entries(INDEXES)) {
            for (const { key, ...options } of specs) await db.collection(name).createIndex(key, options);
          }
          logger.info(`[dispatch] MongoDB indexes ready in ${dbName}`);
        })().catch((err) => {
          indexed = null;
          throw err;
        });
      }
      return indexed;
    },

    /** 'ready' when MongoDB answers a ping within `timeoutMs`, else 'unavailable'. */
    async status() {
      try {
        await connect();
        await db.command({ ping: 1 }, { timeoutMS: timeoutMs });
        return 'ready';
      } catch {
        return 'unavailable';
      }
    },

    close: () => client.close(),
  };
  return database;
}
