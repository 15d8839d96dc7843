// Words of the console and the live view, in Chinese (the default) and English.
"use strict";

const MESSAGES = {
  zh: {
    app: "明厨亮灶",
    login: "登录", logout: "退出", username: "用户名", password: "密码",
    login_wrong: "用户名或密码错误", login_many: "登录失败次数过多，请稍后再试",
    nav_alerts: "告警", nav_stats: "统计", nav_wall: "实时画面",
    filters: "筛选", site: "场所", camera: "摄像头", rule: "规则", state: "审核状态", phase: "状态",
    time: "时间", since: "开始日期", until: "结束日期", all: "全部", apply: "查询", more: "加载更多",
    no_events: "暂无告警",
    pending: "待审核", confirmed: "已确认", false_positive: "误报", rectified: "已整改",
    open: "进行中", updated: "进行中", closed: "已结束",
    confirm: "确认", dismiss: "误报", rectify: "提交整改", note: "备注", photo: "整改照片",
    rectify_note_needed: "请填写整改说明",
    detail: "告警详情", audit: "审核记录", no_audit: "暂无审核记录", back: "返回",
    from_to: "{from} → {to}", by: "{actor}（{role}）",
    stats: "统计", events: "告警数", reviewed: "已审核", confirm_rate: "确认率", fp_rate: "误报率",
    rectify_rate: "整改率", mean_rectify: "平均整改用时", by_site: "按场所", by_rule: "按规则", by_day: "按日期",
    hours: "{n} 小时",
    wall: "实时画面", watch: "观看", status_live: "直播中", status_connecting: "连接中…",
    status_camera_offline: "摄像头离线，恢复后自动继续", status_offline: "连接中断，正在重连…",
    status_viewer_limit: "观看人数已满，稍后自动重试", status_outside_viewing_hours: "不在开放观看时间内",
    status_no_viewing_hours: "该学校未设置开放观看时间", status_no_camera: "没有这个摄像头或无权观看",
    status_no_h264: "此浏览器不支持 H.264 视频", status_disabled: "实时画面未开启",
    status_forbidden: "无权观看", status_login: "请先登录", status_error: "出错了",
    status_ended: "观看已结束", status_disconnected: "连接已断开",
    privacy_on: "人脸已模糊", viewers: "{n}/{max} 人观看", connected: "在线", disconnected_cam: "离线",
    idle: "空闲", live: "直播中", offline: "离线", connecting: "连接中",
    role_admin: "管理员", role_regulator: "监管人员", role_site_manager: "食堂负责人", role_parent: "家长",
    role_platform: "平台",
    saved: "已保存", failed: "操作失败：{msg}", snapshot: "抓拍", lang: "English",
  },
  en: {
    app: "Bright Kitchen",
    login: "Log in", logout: "Log out", username: "User name", password: "Password",
    login_wrong: "Wrong user name or password", login_many: "Too many failed logins, try again later",
    nav_alerts: "Alerts", nav_stats: "Statistics", nav_wall: "Live wall",
    filters: "Filters", site: "Site", camera: "Camera", rule: "Rule", state: "Review", phase: "Phase",
    time: "Time", since: "From", until: "To", all: "All", apply: "Search", more: "Load more",
    no_events: "No alerts",
    pending: "Pending", confirmed: "Confirmed", false_positive: "False positive", rectified: "Rectified",
    open: "Open", updated: "Open", closed: "Closed",
    confirm: "Confirm", dismiss: "False positive", rectify: "Record rectification", note: "Note",
    photo: "Photo", rectify_note_needed: "Say what was done",
    detail: "Alert", audit: "Audit trail", no_audit: "No review yet", back: "Back",
    from_to: "{from} → {to}", by: "{actor} ({role})",
    stats: "Statistics", events: "Alerts", reviewed: "Reviewed", confirm_rate: "Confirmed",
    fp_rate: "False positives", rectify_rate: "Rectified", mean_rectify: "Mean time to rectify",
    by_site: "By site", by_rule: "By rule", by_day: "By day", hours: "{n} h",
    wall: "Live wall", watch: "Watch", status_live: "Live", status_connecting: "Connecting…",
    status_camera_offline: "Camera offline; resumes by itself", status_offline: "Connection lost, reconnecting…",
    status_viewer_limit: "Too many viewers; retrying", status_outside_viewing_hours: "Outside viewing hours",
    status_no_viewing_hours: "The school has set no viewing hours", status_no_camera: "No such camera, or not yours",
    status_no_h264: "This browser cannot play H.264 video", status_disabled: "The live view is off",
    status_forbidden: "Not allowed", status_login: "Log in first", status_error: "Something went wrong",
    status_ended: "The session has ended", status_disconnected: "Disconnected",
    privacy_on: "Faces blurred", viewers: "{n}/{max} watching", connected: "Online", disconnected_cam: "Offline",
    idle: "Idle", live: "Live", offline: "Offline", connecting: "Connecting",
    role_admin: "Admin", role_regulator: "Regulator", role_site_manager: "Site manager", role_parent: "Parent",
    role_platform: "Platform",
    saved: "Saved", failed: "Failed: {msg}", snapshot: "Snapshot", lang: "中文",
  },
};

let LANG = localStorage.getItem("bk_lang") || "zh";
if (!MESSAGES[LANG]) LANG = "zh";

function t(key, params = {}) {
  const text = MESSAGES[LANG][key] ?? MESSAGES.zh[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(params[name] ?? ""));
}

function setLang(lang) {
  LANG = MESSAGES[lang] ? lang : "zh";
  localStorage.setItem("bk_lang", LANG);
  document.documentElement.lang = LANG === "zh" ? "zh-CN" : "en";
}

// Fills every element with data-i18n (text) or data-i18n-placeholder.
function translatePage(root = document) {
  root.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  root.querySelectorAll("[data-i18n-placeholder]").forEach((el) => { el.placeholder = t(el.dataset.i18nPlaceholder); });
}

function formatTime(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleString(LANG === "zh" ? "zh-CN" : "en-GB", {hour12: false});
}
