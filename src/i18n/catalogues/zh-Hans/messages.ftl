# threepid-sidecar：用户在验证邮件、短信、安全通知以及邮件链接打开的页面中读到的每一句话。
# 简体中文版（统一称“你”）。以英文文件为准：键完全相同。
#
# 变量（切勿翻译变量名）：
#   $server_name  主服务器的 Matrix 服务器名，例如 example.org
#   $app_name     服务名称，例如 "Example Chat"
#   $time         已格式化的日期和时间，例如 "2026-12-06 18:40 UTC"
#   $client_ip    部分隐藏的网络地址，例如 "203.0.113.*"
#   $token        用户可能需要输入的验证码（字母和数字）
# 句子要简短、平实。链接、验证码和排版会在外围添加。

## 所有验证邮件共用

mail-greeting = 你好，
mail-code-instead = 如果你的应用要求输入验证码，请输入：
mail-button-fallback = 如果按钮无效，请将此链接复制到浏览器中打开：

## 邮件：注册新账号

registration-subject = 验证你的邮箱
registration-heading = 确认你的邮箱地址
# 纯文本邮件：后面单独一行是链接。
registration-text = 你申请使用此邮箱地址在 { $server_name } 上注册新账号。要确认此地址属于你并完成注册，请打开以下链接，然后点击页面上的按钮：
# HTML 邮件：后面是一个按钮。
registration-html = 你申请使用此邮箱地址在 { $server_name } 上注册新账号。请确认此地址属于你，以完成注册。
registration-button = 确认邮箱地址
registration-ignore = 如果你没有提出此申请，可以忽略此邮件：只要链接未被打开并确认，就不会发生任何事情。

## 邮件：重置密码

password-reset-subject = 重置密码
password-reset-heading = 重置你的密码
password-reset-text = 有人申请重置 { $server_name } 上使用此邮箱地址的账号密码。要确认是你本人操作，请打开以下链接并点击页面上的按钮，然后返回应用设置新密码：
password-reset-html = 有人申请重置 { $server_name } 上使用此邮箱地址的账号密码。请确认是你本人操作，然后返回应用设置新密码。
password-reset-button = 确认重置密码
password-reset-ignore = 如果你没有提出此申请，可以忽略此邮件：你的密码不会改变。

## 邮件：将此地址添加到现有账号

add-address-subject = 验证你的邮箱
add-address-heading = 确认你的邮箱地址
add-address-text = 你申请将此邮箱地址添加到你在 { $server_name } 上的账号。要确认此地址属于你，请打开以下链接，然后点击页面上的按钮：
add-address-html = 你申请将此邮箱地址添加到你在 { $server_name } 上的账号。请确认此地址属于你，以完成添加。
add-address-button = 确认邮箱地址
add-address-ignore = 如果你没有提出此申请，可以忽略此邮件：只要链接未被打开并确认，此地址就不会被添加。

## 短信（请保持简短：一条短信可容纳 160 个普通拉丁字符，或 70 个其他文字的字符）

sms-code = 你的 { $app_name } 验证码是 { $token }。如非本人操作，请忽略本短信。

## 安全通知：密码已更改

notice-password-subject = 你的密码已更改
notice-password-heading = 你的密码已更改
notice-password-body = 你在 { $server_name } 上的账号密码已于 { $time } 被更改，操作来自网络地址 { $client_ip }。
notice-password-you = 如果是你本人操作，无需再做任何事。
notice-password-not-you = 如果不是你本人操作，请立即使用此邮箱地址重置密码，并告知 { $server_name } 的管理员。

## 安全通知：此地址已从账号中移除

notice-removed-subject = 邮箱地址已移除
notice-removed-heading = 邮箱地址已移除
notice-removed-body = 此邮箱地址已于 { $time } 从你在 { $server_name } 上的账号中移除。
notice-removed-you = 如果是你本人操作，无需再做任何事。
notice-removed-not-you = 如果不是你本人操作，请登录并检查你的账号，同时告知 { $server_name } 的管理员。
notice-footer = 你收到此邮件，是因为此地址属于（或曾属于）{ $server_name } 上的某个账号。这只是一条通知：无需确认任何内容。

## 页面：邮件链接打开的页面（只有一个按钮；点击之前不会发生任何事情）

confirm-registration-title = 确认你的邮箱地址
confirm-registration-body = 点击按钮，确认此邮箱地址属于你。之后你的应用即可完成账号创建。
confirm-registration-button = 确认邮箱地址
confirm-password-reset-title = 重置你的密码
confirm-password-reset-body = 点击按钮，确认是你申请重置密码。然后返回应用设置新密码。
confirm-password-reset-button = 确认重置密码
confirm-add-address-title = 添加此邮箱地址
confirm-add-address-body = 点击按钮，确认此邮箱地址属于你。之后你的应用即可将其添加到你的账号。
confirm-add-address-button = 确认邮箱地址
confirm-ignore = 如果你没有提出此申请，请关闭此页面：只要不点击按钮，就不会有任何变化。

## 页面：点击按钮后，操作成功

success-title = 邮箱地址已验证
success-body = 谢谢！请返回应用继续操作；你可以关闭此页面了。

## 页面：点击按钮后，操作失败

failure-title = 无法验证你的邮箱地址
failure-next = 请返回应用，让它重新发送一封邮件，然后再试一次。
failure-link-incomplete = 此链接不完整。请将邮件中的完整链接复制到浏览器中。
failure-link-expired = 此链接已失效。请在应用中重新开始。
failure-token-incorrect = 此链接中的验证码错误或已过期。
failure-too-many-attempts = 此请求的错误验证码尝试次数过多。请在应用中重新开始。
failure-rate-limited = 来自你所在网络的尝试次数过多。请等待几分钟，然后重新打开此链接。
failure-unavailable = 服务暂时不可用。请在一分钟后重新打开此链接。
failure-other = 出了点问题。请在一分钟后重新打开此链接。
