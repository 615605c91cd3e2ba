// Busy-waits `parameters.ms` milliseconds (default 400) and answers: an in-flight
// request for the SIGTERM check.
function backandCallback(userInput, dbRow, parameters, userProfile) {
  const ms = Number((parameters && parameters.ms) || 400);
  const start = Date.now();
  let spins = 0;
  while (Date.now() - start < ms) {
    spins++;
  }
  return { done: true, ms: ms, spins: spins > 0 };
}
