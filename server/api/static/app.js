// The demo page's behaviour: POST /predict with the seed's {"review": text} and show the answer,
// then POST /explain and shade the review's words by how far each moved the score.
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

// How many of the most strongly attributed words are marked (bold) and listed.
const STRONGEST_COUNT = 3;
// Shading: a word's colour is as deep as its attribution's share of the largest one.
const TOWARD_POSITIVE = [30, 123, 70];
const TOWARD_NEGATIVE = [179, 38, 30];
// Each explanation asked for gets a ticket; an answer whose ticket is no longer the latest (a
// newer review was analyzed, an error shown or the page cleared meanwhile) is not shown.
let explainTicket = 0;
const WHY_UNSEEN = {
  beyond_maxlen: "before the last words the model reads: it never saw this one",
  removed: "removed with markup and punctuation before the model: it never saw this",
};

function showError(message) {
  explainTicket += 1;
  $("result").hidden = true;
  $("explanation").hidden = true;
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

function signed(value) {
  return `${value >= 0 ? "+" : "−"}${Math.abs(value).toFixed(3)}`;
}

// The review as typed, each word a <span> shaded by its attribution. Offsets are code points,
// so the text is split with Array.from (a JavaScript string indexes UTF-16 units).
function showExplanation(text, answer) {
  const chars = Array.from(text);
  const attributed = answer.words.filter((word) => word.attribution !== null);
  const largest = Math.max(1e-12, ...attributed.map((word) => Math.abs(word.attribution)));
  const strongest = new Set(
    [...attributed]
      .sort((a, b) => Math.abs(b.attribution) - Math.abs(a.attribution))
      .slice(0, STRONGEST_COUNT),
  );
  const container = $("explanation-text");
  container.replaceChildren();
  let at = 0;
  for (const word of answer.words) {
    container.append(chars.slice(at, word.start).join(""));
    const span = document.createElement("span");
    span.textContent = chars.slice(word.start, word.end).join("");
    span.className = `word ${word.status.replaceAll("_", "-")}`;
    span.dataset.status = word.status;
    if (word.attribution === null) {
      span.classList.add("unseen");
      span.title = WHY_UNSEEN[word.status] || "the model never saw this";
    } else {
      const positive = word.attribution >= 0;
      const strength = Math.abs(word.attribution) / largest;
      const [r, g, b] = positive ? TOWARD_POSITIVE : TOWARD_NEGATIVE;
      span.classList.add(positive ? "toward-positive" : "toward-negative");
      span.style.backgroundColor = `rgba(${r}, ${g}, ${b}, ${(0.08 + 0.6 * strength).toFixed(3)})`;
      span.dataset.attribution = String(word.attribution);
      const unknown = word.status === "out_of_vocabulary" ? " (a word the model does not know)" : "";
      span.title = `${signed(word.attribution)} towards Positive${unknown}`;
      if (strongest.has(word)) span.classList.add("strongest");
    }
    container.append(span);
    at = word.end;
  }
  container.append(chars.slice(at).join(""));
  $("explanation-strongest").textContent = strongest.size
    ? `Strongest: ${[...strongest]
        .map((word) => `“${chars.slice(word.start, word.end).join("")}” ${signed(word.attribution)}`)
        .join(", ")}`
    : "";
  const method = answer.method;
  $("explanation-method").textContent =
    `Integrated gradients (${method.steps} steps) from a baseline of blank words scoring ` +
    `${method.baseline_score.toFixed(3)}: the shaded words' attributions add up to the score ` +
    `minus that, give or take ${Math.abs(method.convergence_delta).toExponential(1)}.`;
  $("explanation").hidden = false;
}

function showExplanationNote(message) {
  $("explanation-text").textContent = message;
  $("explanation-strongest").textContent = "";
  $("explanation-method").textContent = "";
  $("explanation").hidden = false;
}

async function explain(text) {
  const ticket = ++explainTicket;
  try {
    const response = await fetch("/explain", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ review: text }),
    });
    if (ticket !== explainTicket) return;
    if (response.ok) {
      showExplanation(text, await response.json());
    } else {
      showExplanationNote(`No explanation this time. ${await errorMessage(response)}`);
    }
  } catch (error) {
    if (ticket === explainTicket) {
      showExplanationNote(`No explanation this time (${error.message}).`);
    }
  }
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
  let explained = null; // the review to explain once its result is shown
  $("result").setAttribute("aria-busy", "true");
  try {
    const response = await fetch("/predict", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ review: text }),
    });
    if (response.ok) {
      showResult(await response.json());
      $("explanation").hidden = true;
      explained = text;
    } else {
      showError(await errorMessage(response));
    }
  } catch (error) {
    showError(`Cannot reach the server (${error.message}). Is sentiment-server running?`);
  } finally {
    button.disabled = false;
    $("result").removeAttribute("aria-busy");
  }
  // After the button is back: the explanation takes longer than the score.
  if (explained !== null) await explain(explained);
}

function tryExample(kind) {
  $("review").value = EXAMPLES[kind];
  analyze();
}

function clearAll() {
  explainTicket += 1; // an explanation still on its way is not shown
  $("review").value = "";
  $("result").hidden = true;
  $("explanation").hidden = true;
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
