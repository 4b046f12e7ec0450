/* The SMS text's encoding and segments, live, under each "SMS text" box of the template editor.
 *
 * The same rules as channels/sms.py (GSM-7: 160 characters, 153 a segment once split, the extension
 * table's characters taking two; anything else UCS-2: 70, or 67 a segment, in UTF-16 code units) on
 * the same text as campaigns.templating.sms_estimate_text (a {{ track("…") }} as its tracked link's
 * length, each other {{ variable }} as a fixed number of letters, tags dropped, the chosen brand's
 * opt-out suffix appended). The sets, the width
 * and the brands' suffixes come from the server in the box's data-sms-config attribute.
 */
(function () {
  "use strict";

  function trackedWidth(urlLength, config) { // campaigns.templating.tracked_link_width
    return config.baseLength + 4 + Math.ceil((urlLength + 16) * 4 / 3) + 44;
  }

  function estimateText(source, config) {
    var text = source
      .replace(/\{\{\s*track\(\s*(["'])([\s\S]*?)\1\s*\)\s*\}\}/g, function (match, quote, url) {
        return "x".repeat(trackedWidth(url.length, config));
      })
      .replace(/\{\{\s*track\([\s\S]*?\)\s*\}\}/g, "x".repeat(trackedWidth(config.trackedUrl, config)))
      .replace(/\{\{[\s\S]*?\}\}/g, "x".repeat(config.variableWidth))
      .replace(/\{%[\s\S]*?%\}|\{#[\s\S]*?#\}/g, "");
    var brand = document.getElementById("id_brand");
    var brandId = brand ? brand.value : "";
    var suffix = (config.suffixes[brandId] || "").trim();
    if (!suffix && !brand && Object.keys(config.suffixes).length === 1) {
      suffix = (Object.values(config.suffixes)[0] || "").trim();
    }
    if (!suffix || text.toLowerCase().indexOf(suffix.toLowerCase()) !== -1) return text;
    return text.trimEnd() + " " + suffix;
  }

  function segments(text, config) {
    if (!text) return { encoding: "GSM-7", segments: 0, units: 0, limit: 160 };
    var gsm = true, units = 0;
    for (var ch of text) {
      if (config.extension.indexOf(ch) !== -1) units += 2;
      else if (config.basic.indexOf(ch) !== -1) units += 1;
      else { gsm = false; break; }
    }
    if (gsm) {
      return units <= 160
        ? { encoding: "GSM-7", segments: 1, units: units, limit: 160 }
        : { encoding: "GSM-7", segments: Math.ceil(units / 153), units: units, limit: 153 };
    }
    units = text.length; // UTF-16 code units, as the provider bills them
    return units <= 70
      ? { encoding: "UCS-2", segments: 1, units: units, limit: 70 }
      : { encoding: "UCS-2", segments: Math.ceil(units / 67), units: units, limit: 67 };
  }

  function attach(box) {
    if (box.dataset.smsCounter) return;
    box.dataset.smsCounter = "1";
    var config = JSON.parse(box.dataset.smsConfig);
    var out = document.createElement("div");
    out.className = "help mh-sms-counter";
    (box.closest(".flex-container") || box).insertAdjacentElement("afterend", out); // under the box, as help texts
    function update() {
      var count = segments(estimateText(box.value, config), config);
      out.dataset.encoding = count.encoding;
      out.dataset.segments = String(count.segments);
      out.dataset.units = String(count.units);
      out.textContent = count.encoding + " · " + count.segments + " segment" + (count.segments === 1 ? "" : "s") +
        " · " + count.units + " characters (" + count.limit + " a segment), opt-out suffix included; each " +
        "{{ variable }} counted as " + config.variableWidth + " characters" +
        (count.encoding === "UCS-2" ? ". A character outside GSM-7 makes the whole message UCS-2." : "");
    }
    box.addEventListener("input", update);
    var brand = document.getElementById("id_brand");
    if (brand) brand.addEventListener("change", update);
    update();
  }

  function attachAll(root) {
    root.querySelectorAll("textarea[data-sms-config]").forEach(function (box) {
      if (box.name.indexOf("__prefix__") === -1) attach(box);
    });
  }

  document.addEventListener("DOMContentLoaded", function () { attachAll(document); });
  document.addEventListener("formset:added", function (event) { attachAll(event.target); });
})();
