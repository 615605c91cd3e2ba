'use strict';
// Socket.IO on the HTTP server's port: handshake authentication, identity rooms, channels
// (join / leave / chan_in → chan_out / echo) and `db-<object>` channels whose members are
// placed by the object's read permission and row security.
//
// Room layout (the whole delivery policy):
//   user:<username lower-case>, role:<role>, all        identity rooms, joined on connect
//   chan:<name>                                          a plain channel joined with `join`
//   db:<object>                                          readers of every row of <object>
//   db:<object>:owner:<userId>                           readers of only their own rows
// Plain channels are prefixed so that `join("user:someone@x")` or `join("db:owned")` puts
// a socket in a channel of that name, never in another user's or a table's room.

const { Server } = require('socket.io');
const { bearer } = require('./auth');

const CHANNEL_NAME = /^[A-Za-z0-9\-_.:@]{1,100}$/;
const KNOWN_EVENTS = new Set(['echo', 'join', 'leave', 'chan_in']);

const rooms = {
  user: (username) => `user:${username.toLowerCase()}`,
  role: (role) => `role:${role}`,
  all: 'all',
  channel: (name) => `chan:${name}`,
  dbAll: (object) => `db:${object}`,
  dbOwner: (object, userId) => `db:${object}:owner:${userId}`,
};

// Who may read `object`: 'all', 'own', or null (denied).
function readAccess(object, who) {
  if (!object.permissions.read.has(who.role)) return null;
  if (object.rowSecurity === 'owner' && who.role !== 'Admin') return 'own';
  return 'all';
}

function attachRealtime(httpServer, { objects, tokens, log }) {
  const io = new Server(httpServer, {
    maxHttpBufferSize: 1 << 20,
    pingInterval: 25000,
    pingTimeout: 20000,
    serveClient: false,
  });

  io.use((socket, next) => {
    const auth = socket.handshake.auth || {};
    const who = tokens.verify(bearer(auth.token, true));
    if (!who) return next(new Error('invalid token'));
    socket.data.who = who;
    next();
  });

  // The room a `join` of `name` puts the socket in, or an error message.
  function roomFor(who, name) {
    if (!name.startsWith('db-')) return { room: rooms.channel(name) };
    const objectName = name.slice(3);
    const object = objects.get(objectName);
    if (!object) return { error: `no object named \`${objectName}\` for channel \`${name}\`` };
    const access = readAccess(object, who);
    if (access === null) {
      return { error: `role \`${who.role}\` may not read \`${object.name}\`, so it may not join \`${name}\`` };
    }
    return { room: access === 'all' ? rooms.dbAll(object.name) : rooms.dbOwner(object.name, who.userId) };
  }

  function channelName(data) {
    const name = typeof data === 'string' ? data
      : data !== null && typeof data === 'object' && typeof data.channel === 'string' ? data.channel
        : null;
    if (name === null) return { error: 'expected a channel name or {channel: name}' };
    if (!CHANNEL_NAME.test(name)) {
      return { error: 'channel names are 1 to 100 characters of letters, digits and - _ . : @' };
    }
    return { name };
  }

  io.on('connection', (socket) => {
    const who = socket.data.who;
    socket.join([rooms.user(who.username), rooms.role(who.role), rooms.all]);

    // Handlers get (data?, ack?): the ack is the last argument when it is a function.
    const reply = (ack) => ({
      ok(ackData, event, eventData) {
        if (ack) ack(ackData);
        else if (event) socket.emit(event, eventData);
      },
      // 'error' is not a reserved event name for socket.io 4 server sockets, so it is
      // emitted as is (clients receive it as an ordinary event).
      error(command, message) {
        if (ack) ack({ error: message });
        else socket.emit('error', { event: command, message });
      },
    });
    const on = (event, handler) => socket.on(event, (...args) => {
      const ack = typeof args[args.length - 1] === 'function' ? args.pop() : null;
      handler(args.length > 0 ? args[0] : undefined, reply(ack));
    });

    on('echo', (data, r) => {
      const value = data === undefined ? null : data;
      r.ok(value, 'echo', value);
    });

    on('join', (data, r) => {
      const { name, error } = channelName(data);
      if (error) return r.error('join', error);
      const target = roomFor(who, name);
      if (target.error) return r.error('join', target.error);
      socket.join(target.room);
      r.ok({ ok: true, channel: name }, 'joined', name);
    });

    on('leave', (data, r) => {
      const { name, error } = channelName(data);
      if (error) return r.error('leave', error);
      const target = roomFor(who, name);
      if (target.room) socket.leave(target.room);
      r.ok({ ok: true, channel: name }, 'ok', { event: 'leave', channel: name });
    });

    on('chan_in', (data, r) => {
      if (data === null || typeof data !== 'object' || Array.isArray(data) || typeof data.channel !== 'string') {
        return r.error('chan_in', 'chan_in expects {channel, data}');
      }
      const name = data.channel;
      if (!CHANNEL_NAME.test(name)) {
        return r.error('chan_in', 'channel names are 1 to 100 characters of letters, digits and - _ . : @');
      }
      if (name.startsWith('db-')) {
        return r.error('chan_in',
          `cannot publish into database channel \`${name}\`: its events come only from committed changes`);
      }
      io.to(rooms.channel(name)).emit('chan_out', {
        channel: name,
        data: data.data === undefined ? null : data.data,
        sid: socket.id,
      });
      r.ok({ ok: true }, null);
    });

    socket.onAny((event, ...args) => {
      if (KNOWN_EVENTS.has(event)) return;
      const ack = typeof args[args.length - 1] === 'function' ? args[args.length - 1] : null;
      reply(ack).error(String(event), `unknown event \`${String(event).slice(0, 100)}\``);
    });
  });

  return {
    io,
    emitAll(event, data) {
      io.to(rooms.all).emit(event, data);
    },
    emitRole(event, data, role) {
      io.to(rooms.role(role)).emit(event, data);
    },
    emitUsers(event, data, usernames) {
      if (usernames.length > 0) io.to(usernames.map(rooms.user)).emit(event, data);
    },
    // `db_created` to exactly the sockets that may read `row` (owned by `ownerId`).
    dbCreated(object, row, ownerId) {
      const targets = [rooms.dbAll(object.name)];
      if (object.rowSecurity === 'owner') targets.push(rooms.dbOwner(object.name, ownerId));
      io.to(targets).emit('db_created', { channel: `db-${object.name}`, data: row });
    },
    // Disconnects every socket and closes the engine; the HTTP server is Fastify's to close.
    close() {
      io.disconnectSockets(true);
      io.engine.close();
    },
  };
}

module.exports = { attachRealtime };
