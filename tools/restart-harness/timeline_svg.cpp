// The SVG timeline: requests/s and losses over time above, answer latency (p50, p99) below,
// restarts as dashed lines, and the generation that served most in each stretch shaded behind.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "report.hpp"

namespace harness {
namespace {

constexpr double width = 1000, left = 78, right = 24, title_h = 30;
constexpr double rate_h = 200, gap = 34, latency_h = 120, axis_h = 44;
constexpr double height = title_h + rate_h + gap + latency_h + axis_h;
constexpr double plot_w = width - left - right;
constexpr double rate_top = title_h, latency_top = title_h + rate_h + gap;
const char* const generation_colors[] = {"#e8f0fb", "#fbf0e4", "#e9f6ea", "#f5e9f6", "#f9f6dc", "#e6f5f5"};

std::string xml_escaped(const std::string& text) {
  std::string out;
  for (const char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '\'': out += "&apos;"; break;
      case '"': out += "&quot;"; break;
      default: out += (static_cast<unsigned char>(c) < 0x20) ? '?' : c;
    }
  }
  return out;
}

std::string number(double value, int decimals = 0) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
  return buf;
}

// A step of 1, 2 or 5 times a power of ten that cuts `span` into about `parts` pieces.
double nice_step(double span, double parts) {
  const double raw = span / parts;
  const double power = std::pow(10.0, std::floor(std::log10(raw)));
  for (const double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * power) return m * power;
  return 10 * power;
}

// Seconds with as many decimals as the tick step needs (0.2 s steps: "1.2 s").
std::string seconds_label(double us, double step_us) {
  const int decimals = std::max(0, static_cast<int>(-std::floor(std::log10(step_us / 1e6) + 1e-9)));
  return number(us / 1e6, decimals) + " s";
}

double latency_percentile(std::vector<std::uint32_t>& v, double p) {
  if (v.empty()) return 0;
  const auto k = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(k), v.end());
  return v[k];
}

}  // namespace

grace::result<void> write_svg(const options& o, const run_record& r, const std::string& path) {
  // About 200 buckets over the run, none shorter than 5 ms.
  const std::uint64_t span_us = std::max<std::uint64_t>(r.end_us, 1);
  const std::uint64_t bucket_us = std::max<std::uint64_t>(5000, span_us / 200);
  const double per_second = 1e6 / static_cast<double>(bucket_us);
  const std::size_t buckets = static_cast<std::size_t>(span_us / bucket_us) + 1;
  std::vector<std::uint64_t> ok(buckets), lost(buckets), broken(buckets);
  std::vector<std::vector<std::uint32_t>> latencies(buckets);
  std::vector<std::map<pid_t, std::uint64_t>> served(buckets);
  for (const auto& q : r.requests) {
    const std::size_t b = std::min(buckets - 1, static_cast<std::size_t>(q.end_us / bucket_us));
    if (q.result == outcome::ok) {
      ++ok[b];
      latencies[b].push_back(q.latency_us);
    } else {
      ++lost[b];
    }
    if (q.served_by) ++served[b][q.served_by];
    if (q.broke_session) ++broken[b];
  }
  std::vector<double> p50(buckets), p99(buckets);
  double latency_peak = 0.001;
  for (std::size_t b = 0; b < buckets; ++b) {
    p50[b] = latency_percentile(latencies[b], 0.5) / 1000.0;
    p99[b] = latency_percentile(latencies[b], 0.99) / 1000.0;
    latency_peak = std::max(latency_peak, p99[b]);
  }
  double rate_peak = 1;
  for (std::size_t b = 0; b < buckets; ++b)
    rate_peak = std::max(rate_peak, static_cast<double>(std::max({ok[b], lost[b], broken[b]})) * per_second);
  rate_peak = nice_step(rate_peak, 1) * std::ceil(rate_peak / nice_step(rate_peak, 1));
  latency_peak = nice_step(latency_peak, 1) * std::ceil(latency_peak / nice_step(latency_peak, 1));

  auto x = [&](double us) { return left + plot_w * us / static_cast<double>(span_us); };
  auto rate_y = [&](double per_s) { return rate_top + rate_h * (1 - per_s / rate_peak); };
  auto latency_y = [&](double ms) { return latency_top + latency_h * (1 - std::min(ms, latency_peak) / latency_peak); };

  std::string svg;
  auto add = [&](const std::string& s) { svg += s; };
  add("<svg xmlns='http://www.w3.org/2000/svg' width='" + number(width) + "' height='" + number(height) +
      "' font-family='sans-serif' font-size='12'>\n<rect width='100%' height='100%' fill='white'/>\n");
  add("<text x='" + number(left) + "' y='18' font-size='14'>" +
      xml_escaped("restart-harness: " + o.target_text + ", " + std::to_string(o.clients) + " clients, " +
                  std::to_string(r.restarts.size()) + " restarts") +
      "</text>\n");

  // Generations: bands by the pid that answered most in each bucket, numbered in order.
  std::map<pid_t, std::size_t> generation_of;
  pid_t band_pid = 0;
  std::size_t band_start = 0;
  auto close_band = [&](std::size_t end) {
    if (band_pid == 0) return;
    const std::size_t g = generation_of.emplace(band_pid, generation_of.size() + 1).first->second;
    const double x0 = x(static_cast<double>(band_start * bucket_us));
    const double w = x(static_cast<double>(end * bucket_us)) - x0;
    const std::string fill = generation_colors[(g - 1) % (sizeof generation_colors / sizeof *generation_colors)];
    for (const double top : {rate_top, latency_top})
      add("<rect x='" + number(x0, 1) + "' y='" + number(top) + "' width='" + number(w, 1) + "' height='" +
          number(top == rate_top ? rate_h : latency_h) + "' fill='" + fill + "'><title>pid " +
          std::to_string(band_pid) + "</title></rect>\n");
    if (w >= 64)  // a label only where it fits
      add("<text x='" + number(x0 + w / 2, 1) + "' y='" + number(rate_top + 12) +
          "' font-size='10' fill='#777' text-anchor='middle'>pid " + std::to_string(band_pid) + "</text>\n");
  };
  for (std::size_t b = 0; b < buckets; ++b) {
    pid_t top_pid = 0;
    std::uint64_t most = 0;
    for (const auto& [pid, n] : served[b])
      if (n > most) most = n, top_pid = pid;
    if (top_pid != 0 && top_pid != band_pid) {
      close_band(b);
      band_pid = top_pid;
      band_start = b;
    }
  }
  close_band(buckets);

  // Axes and ticks.
  const double time_step = nice_step(static_cast<double>(span_us), 8);
  for (double t = 0; t <= static_cast<double>(span_us) + 1; t += time_step) {
    const std::string tx = number(x(t), 1);
    add("<line x1='" + tx + "' x2='" + tx + "' y1='" + number(latency_top + latency_h) + "' y2='" +
        number(latency_top + latency_h + 5) + "' stroke='black'/>\n");
    add("<text x='" + tx + "' y='" + number(latency_top + latency_h + 18) + "' text-anchor='middle'>" +
        seconds_label(t, time_step) + "</text>\n");
  }
  for (const auto& [top, h, peak, unit] : {std::tuple<double, double, double, std::string>{rate_top, rate_h, rate_peak, "/s"},
                                           {latency_top, latency_h, latency_peak, " ms"}}) {
    add("<line x1='" + number(left) + "' x2='" + number(left) + "' y1='" + number(top) + "' y2='" + number(top + h) +
        "' stroke='black'/>\n");
    add("<line x1='" + number(left) + "' x2='" + number(width - right) + "' y1='" + number(top + h) + "' y2='" +
        number(top + h) + "' stroke='black'/>\n");
    for (const double f : {0.0, 0.5, 1.0})
      add("<text x='" + number(left - 6) + "' y='" + number(top + h * (1 - f) + 4) + "' text-anchor='end'>" +
          number(peak * f, peak < 10 ? 1 : 0) + unit + "</text>\n");
  }

  // Requests/s answered, and lost per bucket.
  add("<polyline fill='none' stroke='#1f5fbf' stroke-width='1.5' points='");
  for (std::size_t b = 0; b < buckets; ++b)
    add(number(x(static_cast<double>(b * bucket_us + bucket_us / 2)), 1) + "," +
        number(rate_y(static_cast<double>(ok[b]) * per_second), 1) + " ");
  add("'/>\n");
  for (std::size_t b = 0; b < buckets; ++b)
    if (lost[b] > 0) {
      const double top = rate_y(static_cast<double>(lost[b]) * per_second);
      add("<rect x='" + number(x(static_cast<double>(b * bucket_us)), 1) + "' y='" + number(top, 1) +
          "' width='3' height='" + number(rate_top + rate_h - top, 1) + "' fill='#d62728'><title>" +
          std::to_string(lost[b]) + " lost</title></rect>\n");
    }
  // udp-session: sessions broken per bucket, beside the losses.
  for (std::size_t b = 0; b < buckets; ++b)
    if (broken[b] > 0) {
      const double top = rate_y(static_cast<double>(broken[b]) * per_second);
      add("<rect x='" + number(x(static_cast<double>(b * bucket_us)) + 3, 1) + "' y='" + number(top, 1) +
          "' width='3' height='" + number(rate_top + rate_h - top, 1) + "' fill='#ff7f0e'><title>" +
          std::to_string(broken[b]) + " sessions broken</title></rect>\n");
    }
  // Latency: p50 and p99 of the answers in each bucket.
  for (const auto& [values, colour] : {std::pair<const std::vector<double>&, const char*>{p50, "#2ca02c"}, {p99, "#9467bd"}}) {
    add(std::string("<polyline fill='none' stroke='") + colour + "' stroke-width='1.2' points='");
    for (std::size_t b = 0; b < buckets; ++b)
      if (!latencies[b].empty())
        add(number(x(static_cast<double>(b * bucket_us + bucket_us / 2)), 1) + "," + number(latency_y(values[b]), 1) + " ");
    add("'/>\n");
  }
  // Restarts, numbered where there is room.
  double last_label_x = -100;
  for (const auto& rs : r.restarts) {
    const std::string rx = number(x(static_cast<double>(rs.signal_us)), 1);
    for (const auto& [top, h] : {std::pair<double, double>{rate_top, rate_h}, {latency_top, latency_h}})
      add("<line x1='" + rx + "' x2='" + rx + "' y1='" + number(top) + "' y2='" + number(top + h) +
          "' stroke='#555' stroke-dasharray='4,3'><title>restart " + std::to_string(rs.index) + "</title></line>\n");
    if (x(static_cast<double>(rs.signal_us)) - last_label_x >= 22) {
      last_label_x = x(static_cast<double>(rs.signal_us));
      add("<text x='" + rx + "' y='" + number(rate_top - 3) + "' font-size='10' text-anchor='middle'>" +
          std::to_string(rs.index) + "</text>\n");
    }
  }
  add("<text x='" + number(left) + "' y='" + number(latency_top - 8) + "' font-size='11'>" +
      "answered requests/s (blue), lost (red bars)" +
      std::string(o.mode == load_mode::udp_session ? ", sessions broken (orange bars)" : "") +
      "; below: latency p50 (green), p99 (purple); " +
      "dashed: restarts; shading: the generation that served</text>\n");
  add("</svg>\n");

  std::ofstream out(path);
  if (out) out << svg;
  out.flush();
  if (!out) {
    const int err = errno != 0 ? errno : EIO;
    return tl::unexpected(grace::error(std::error_code(err, std::system_category()),
                                       "cannot write " + path + ": " + std::strerror(err)));
  }
  return {};
}

}  // namespace harness
