#!/usr/bin/env bash
# macOS only: wrap "DIST_DIR/LEM Desktop.app" in DIST_DIR/LEM-Desktop-<version>.dmg (with hdiutil).
#   bash packaging/make_dmg.sh [DIST_DIR]            # default: ./dist (run packaging/build.sh first)
# Optional, from the environment (see packaging/README.md, "Build the Mac app"):
#   LEM_CODESIGN_IDENTITY="Developer ID Application: Name (TEAMID)"   sign the .dmg (the .app is signed by build.sh)
#   LEM_NOTARY_PROFILE=lem-notary    notarize and staple the .app, then the .dmg (a `notarytool store-credentials`
#                                    profile; needs LEM_CODESIGN_IDENTITY, as notarization needs Developer ID code)
# Written without a Mac to run it on: see "What could not be tested" in packaging/README.md.
set -euo pipefail
[ "$(uname)" = Darwin ] || { echo "make_dmg.sh needs macOS (hdiutil, codesign, notarytool)" >&2; exit 1; }
cd "$(dirname "$0")/.."

dist=${1:-dist}
app="$dist/LEM Desktop.app"
[ -d "$app" ] || { echo "no $app: run 'bash packaging/build.sh $dist' first" >&2; exit 1; }
identity=${LEM_CODESIGN_IDENTITY:-}
profile=${LEM_NOTARY_PROFILE:-}
if [ -n "$profile" ] && [ -z "$identity" ]; then
  echo "LEM_NOTARY_PROFILE needs LEM_CODESIGN_IDENTITY: Apple notarizes only Developer ID signed code" >&2
  exit 1
fi
version=$(/usr/libexec/PlistBuddy -c "Print :CFBundleShortVersionString" "$app/Contents/Info.plist")
dmg="$dist/LEM-Desktop-$version.dmg"

echo "checking the app's signature"
codesign --verify --deep --strict --verbose=2 "$app"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

notarize() {  # submit a file, wait for Apple's verdict, print Apple's log if it is not accepted
  local result="$work/notary-$(basename "$1").plist" id status
  xcrun notarytool submit "$1" --keychain-profile "$profile" --wait --output-format plist >"$result" || true
  id=$(/usr/libexec/PlistBuddy -c "Print :id" "$result" 2>/dev/null || echo "?")
  status=$(/usr/libexec/PlistBuddy -c "Print :status" "$result" 2>/dev/null || echo "no answer")
  echo "notarization of $(basename "$1"): $status (submission $id)"
  if [ "$status" != "Accepted" ]; then
    [ "$id" != "?" ] && xcrun notarytool log "$id" --keychain-profile "$profile"
    exit 1
  fi
}

if [ -n "$profile" ]; then
  # Notarize the app itself first and staple its ticket, so Gatekeeper accepts it offline once it is copied
  # out of the disk image. ditto keeps the bundle's symlinks and signatures intact (zip would not).
  ditto -c -k --keepParent "$app" "$work/app.zip"
  notarize "$work/app.zip"
  xcrun stapler staple "$app"
fi

# The disk image: the app and a link to /Applications to drag it onto.
mkdir "$work/stage"
ditto "$app" "$work/stage/LEM Desktop.app"
ln -s /Applications "$work/stage/Applications"
rm -f "$dmg"
hdiutil create -volname "LEM Desktop $version" -srcfolder "$work/stage" -fs HFS+ -format UDZO -ov "$dmg"

if [ -n "$identity" ]; then
  codesign --force --sign "$identity" --timestamp "$dmg"
fi
if [ -n "$profile" ]; then
  notarize "$dmg"
  xcrun stapler staple "$dmg"
  xcrun stapler validate "$dmg"
  spctl --assess --type open --context context:primary-signature --verbose=2 "$dmg"
fi
echo "built $dmg ($(du -h "$dmg" | cut -f1))"
