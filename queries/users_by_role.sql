-- The users of one role, e.g. to compute the usernames for socket.emitUsers.
-- For Admins: it lists emails, which other users should not read.
--   const users = db.query('users_by_role', { role: 'User' });
--   socket.emitUsers('hello', data, users.map(u => u.email));
-- description: users of a role (email and names), by email
-- roles: Admin
-- params: role
SELECT "email", "firstName", "lastName"
FROM "users"
WHERE "role" = {{role}}
ORDER BY "email"
