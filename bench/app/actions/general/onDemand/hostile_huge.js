// Scenario "hostile": a 20 MiB result.
function backandCallback(userInput, dbRow, parameters, userProfile) {
  return 'h'.repeat(20 << 20);
}
