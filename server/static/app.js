// The demo page's behaviour: POST /predict with the seed's {"review": text}, show the answer.
"use strict";

const EXAMPLES = {
  positive:
    "One of the best films I have seen in years. The acting is superb, the story is moving " +
    "and the ending is brilliant. I loved every minute of it and it was great fun to watch.",
  negative:
    "A dull, boring waste of two hours. The plot makes no sense, the acting is awful and the " +
    "dialogue is terrible. I hated it and it was a bad film from start to finish.",
};

const $ = (id) => document.getElementById(id);

function showError(message) {
  $("result").hidden = true;
  $("error").textContent = message;
  $("error").hidden = false;
}

function showResult(answer) {
  const positive = answer.sentiment === "Positive";
  const score = Number(answer.score);
  const result = $("result");
  result.classList.toggle("positive", positive);
  result.classList.toggle("negative", !positive);
  $("result-label").textContent = positive ? "Positive Review" : "Negative Review";
  $("result-bar").style.width = `${(score * 100).toFixed(1)}%`;
  $("result-score").textContent =
    `Score: ${score.toFixed(3)} (the model's probability that the review is positive)`;
  $("error").hidden = true;
  result.hidden = false;
}

// The server's JSON error message, or a sentence about what went wrong on the way.
async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) {
      return `The server could not analyze this review: ${body.error.message} ` +
        `(HTTP ${response.status})`;
    }
  } catch (_) {
    // Not JSON: fall through to the status line.
  }
  return `The server answered HTTP ${response.status} ${response.statusText}.`;
}

async function analyze() {
  const text = $("review").value;
  if (!text.trim()) {
    showError("Type or paste a review first.");
    $("review").focus();
    return;
  }
  const button = $("analyze");
  button.disabled = true;
  $("result").setAttribute("aria-busy", "true");
  try {
    const response = await fetch("/predict", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ review: text }),
    });
    if (response.ok) {
      showResult(await response.json());
    } else {
      showError(await errorMessage(response));
    }
  } catch (error) {
    showError(`Cannot reach the server (${error.message}). Is sentiment-server running?`);
  } finally {
    button.disabled = false;
    $("result").removeAttribute("aria-busy");
  }
}

function tryExample(kind) {
  $("review").value = EXAMPLES[kind];
  analyze();
}

function clearAll() {
  $("review").value = "";
  $("result").hidden = true;
  $("error").hidden = true;
  $("review").focus();
}

document.addEventListener("DOMContentLoaded", () => {
  $("review-form").addEventListener("submit", (event) => {
    event.preventDefault();
    analyze();
  });
  $("try-positive").addEventListener("click", () => tryExample("positive"));
  $("try-negative").addEventListener("click", () => tryExample("negative"));
  $("clear").addEventListener("click", clearAll);
  $("review").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      analyze();
    }
  });
});
