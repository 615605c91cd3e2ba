// Scenario "hostile": an infinite loop; must end at the time limit.
function backandCallback(userInput, dbRow, parameters, userProfile) {
  for (;;) {}
}
