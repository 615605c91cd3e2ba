// Scenario "hostile": allocates until the memory limit stops it.
function backandCallback(userInput, dbRow, parameters, userProfile) {
  const hoard = [];
  for (;;) hoard.push(new Array(1e5).fill(Math.random()));
}
