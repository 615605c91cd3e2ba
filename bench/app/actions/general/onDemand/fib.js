// Scenario "actions": a CPU-bound action, naive recursive Fibonacci.
function backandCallback(userInput, dbRow, parameters, userProfile) {
  function fib(n) {
    return n < 2 ? n : fib(n - 1) + fib(n - 2);
  }
  return { n: parameters.n, fib: fib(parameters.n) };
}
